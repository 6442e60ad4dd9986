-- The RAG lookup: the ten nearest knowledge-base documents to a query embedding, through the HNSW
-- index (cosine distance, as the index is built). $1 is the query vector. No `embedding IS NOT NULL`
-- filter: the index holds no NULLs anyway, and the filter can steer the planner away from the index.
SELECT id, 1 - (embedding <=> $1) AS similarity
FROM ai_kb_documents
ORDER BY embedding <=> $1
LIMIT 10
