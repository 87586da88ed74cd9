"""Streaming metrics: height (F1^HE, MAE, RMSE, delta), segmentation/change (confusion matrix)."""
