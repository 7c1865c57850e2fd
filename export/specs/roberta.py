"""RoBERTa: no token_type_ids (its type vocabulary has one entry); position ids are derived from padding
inside the model."""

from distilrt.export.specs import FILL_MASK, QUESTION_ANSWERING, ArchitectureSpec, FusionSpec, Int8Recipe, register

SPEC = register(
    ArchitectureSpec(
        model_type="roberta",
        input_names=("input_ids", "attention_mask"),
        tasks=(QUESTION_ANSWERING, FILL_MASK),
        mlm_head=("lm_head",),
        position_offset=2,  # max_position_embeddings 514 holds 512 tokens
        int8=Int8Recipe(keep_float=("/qa_outputs/", "/lm_head/")),
        fusion=FusionSpec(
            per_layer={"Attention": 1, "SkipLayerNormalization": 2, "BiasGelu": 1},
            not_fused={
                "EmbedLayerNormalization": (
                    "RoBERTa numbers positions from padding_idx + 1 and skips padding (a cumulative sum over "
                    "the mask); EmbedLayerNormalization numbers them 0..S-1, so fusing would change the outputs"
                ),
            },
        ),
    )
)
