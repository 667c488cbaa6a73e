"""Bundled trained models, installed as ``afxest.models`` (weights arrive with the estimator)."""
