"""bert spec. BERT takes token_type_ids (segment A/B)."""

from distilrt.export.specs import FILL_MASK, QUESTION_ANSWERING, ArchitectureSpec, register

SPEC = register(
    ArchitectureSpec(
        model_type="bert",
        input_names=("input_ids", "attention_mask", "token_type_ids"),
        tasks=(QUESTION_ANSWERING, FILL_MASK),
    )
)
