"""Kafka ingestion (installed as ``rtindex.consumers``): consumer, message codec and
producer helper. Built in the Kafka issue; nothing here yet."""
