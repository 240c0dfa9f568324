"""Items and finding them: the catalog and its log, FAISS index artifacts, co-visits, the sequence retriever, ranking."""
