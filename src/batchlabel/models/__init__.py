"""Model files: sentence encoders, linear heads, the trained-classifier artifact, tokenisation shared by training and labeling, and GGUF import."""
