"""Operating ecrec: online metrics with attribution (``attribution``)."""
