"""ss3d-eval: Evaluate ss3d reconstructions: IoU, Chamfer and F-score after alignment; tables and an HTML report."""
