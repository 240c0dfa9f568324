"""Personalized hybrid search: BM25 with Chinese segmentation (``lexical``), the encoder's query
vector, reciprocal-rank fusion and a profile re-rank (``hybrid``), and its evaluation."""
