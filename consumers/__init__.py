"""Kafka ingestion (installed as ``rtindex.consumers``).

``codec`` (CatalogChange and CategoryEdge encode/decode/checks), ``ingest`` (the consumer
loop: batch, apply through the single writer, commit; dead letters; lag; readiness),
``taxonomy`` (the taxonomy topic: read in full, edges applied in order), ``producer``
(CatalogProducer, ensure_topic) and ``sources`` (change streams for ``rtindex produce``).
"""
