"""Per-article text features the ranking reads beside the vectors: lexical
fingerprints (term overlap) and copy sketches (near-verbatim copies)."""
