"""Content recommendation: guides, articles and editors' reviews ranked by the shopper's profile
(``library``), and the artifact a replica loads them from (``artifact``)."""
