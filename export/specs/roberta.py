"""roberta spec. RoBERTa takes no token_type_ids (its type vocabulary has one entry); position ids are derived from padding inside the model."""

from distilrt.export.specs import FILL_MASK, QUESTION_ANSWERING, ArchitectureSpec, register

SPEC = register(
    ArchitectureSpec(
        model_type="roberta",
        input_names=("input_ids", "attention_mask"),
        tasks=(QUESTION_ANSWERING, FILL_MASK),
        position_offset=2,  # max_position_embeddings 514 holds 512 tokens
    )
)
