"""distilbert spec. DistilBERT takes no token_type_ids."""

from distilrt.export.specs import FILL_MASK, QUESTION_ANSWERING, ArchitectureSpec, register

SPEC = register(
    ArchitectureSpec(
        model_type="distilbert",
        input_names=("input_ids", "attention_mask"),
        tasks=(QUESTION_ANSWERING, FILL_MASK),
    )
)
