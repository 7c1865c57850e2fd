"""ALBERT: takes token_type_ids; 128-wide factorized embeddings projected to the hidden size; one layer's
weights shared by all layers."""

from distilrt.export.specs import FILL_MASK, QUESTION_ANSWERING, ArchitectureSpec, FusionSpec, Int8Recipe, register

SPEC = register(
    ArchitectureSpec(
        model_type="albert",
        input_names=("input_ids", "attention_mask", "token_type_ids"),
        tasks=(QUESTION_ANSWERING, FILL_MASK),
        mlm_head=("predictions",),
        int8=Int8Recipe(keep_float=("/qa_outputs/", "/predictions/", "/embedding_hidden_mapping_in/")),
        fusion=FusionSpec(
            per_layer={"Attention": 1, "SkipLayerNormalization": 2, "FastGelu": 1},
            layers_unfused={"Attention": 1},
            not_fused={
                "Attention (first layer)": (
                    "the optimizer's attention pattern starts at a LayerNormalization or SkipLayerNormalization; "
                    "ALBERT's first layer starts at the 128->hidden embedding projection (a MatMul + Add)"
                ),
                "EmbedLayerNormalization": (
                    "ALBERT's embedding LayerNorm is 128 wide and followed by a projection to the hidden size; "
                    "EmbedLayerNormalization has no projection"
                ),
            },
        ),
    )
)
