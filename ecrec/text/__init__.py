"""Understanding what shoppers write: preparation (clauses, languages), the encoder, its sentiment and intent branches."""
