"""Training: the classifier, alignment and language stages, resumable, on one or many devices."""
