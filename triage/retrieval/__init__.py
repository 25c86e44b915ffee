"""Similar resolved cases: embeddings, the vector store, indexing and retrieval quality.

Flow: knowledge articles and approved replies (`documents`) -> embeddings (`embedders`, run by
Beam's `MLTransform` in `index`) -> the vector store (`store`, Milvus) -> negative chats enriched
with the nearest cases before the apology prompt. `embed_eval` measures the embedding models.
"""
