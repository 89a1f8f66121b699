"""Inference: top-N recommendations in original KuaiRec ids from a trained model or a baseline."""
