"""Kafka ingestion (installed as ``rtindex.consumers``).

``codec`` (CatalogChange encode/decode/checks), ``ingest`` (the consumer loop: batch,
apply through the single writer, commit; dead letters; lag; readiness), ``producer``
(CatalogProducer, ensure_topic) and ``sources`` (change streams for ``rtindex produce``).
"""
