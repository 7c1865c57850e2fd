"""BERT: takes token_type_ids (segments A/B); its embeddings (word + position + segment, LayerNorm) fuse into
EmbedLayerNormalization like DistilBERT's."""

from distilrt.export.specs import FILL_MASK, QUESTION_ANSWERING, ArchitectureSpec, FusionSpec, Int8Recipe, register

SPEC = register(
    ArchitectureSpec(
        model_type="bert",
        input_names=("input_ids", "attention_mask", "token_type_ids"),
        tasks=(QUESTION_ANSWERING, FILL_MASK),
        mlm_head=("cls",),
        int8=Int8Recipe(keep_float=("/qa_outputs/", "/cls/predictions/")),
        fusion=FusionSpec(
            per_layer={"Attention": 1, "SkipLayerNormalization": 2, "BiasGelu": 1},
            fixed={"EmbedLayerNormalization": 1},
        ),
    )
)
