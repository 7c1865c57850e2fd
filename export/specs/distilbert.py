"""DistilBERT: no token_type_ids; everything fuses (docs/design.md#fusion: 6/6 Attention, EmbedLayerNorm, 12 SkipLayerNorm,
6 BiasGelu at full size)."""

from distilrt.export.specs import FILL_MASK, QUESTION_ANSWERING, ArchitectureSpec, FusionSpec, Int8Recipe, register

SPEC = register(
    ArchitectureSpec(
        model_type="distilbert",
        input_names=("input_ids", "attention_mask"),
        tasks=(QUESTION_ANSWERING, FILL_MASK),
        mlm_head=("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector"),
        shape_keys=("n_layers", "n_heads", "dim"),
        int8=Int8Recipe(keep_float=("/qa_outputs/", "/vocab_transform/", "/vocab_projector/")),
        fusion=FusionSpec(
            per_layer={"Attention": 1, "SkipLayerNormalization": 2, "BiasGelu": 1},
            fixed={"EmbedLayerNormalization": 1},
        ),
    )
)
