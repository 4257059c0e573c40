"""Training: the loop that trains one model for a token budget, free of Ray and MLflow."""
