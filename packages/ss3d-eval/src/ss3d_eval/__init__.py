"""ss3d-eval: IoU, Chamfer and F-score of reconstructions after alignment; tables and an HTML report."""

from ss3d_data.errors import EmptySurface
from ss3d_eval.align import Similarity, align
from ss3d_eval.config import EvalConfig, eval_config
from ss3d_eval.evaluate import GroundTruth, evaluate, read_results, result_path
from ss3d_eval.metrics import point_scores, score, volume_iou, voxelize
from ss3d_eval.predict import (
    CheckpointPredictor,
    MeshDirPredictor,
    Predictor,
    checkpoint_predictor,
    make_predictors,
    mesh_dir_predictor,
)
from ss3d_eval.raster import render
from ss3d_eval.report import build_report
from ss3d_eval.shapes import Shape, load_shape, make_shape, sample_surface
from ss3d_eval.table import ScoreTable, build_table

__all__ = [
    "CheckpointPredictor", "EmptySurface", "EvalConfig", "GroundTruth", "MeshDirPredictor", "Predictor",
    "ScoreTable", "Shape", "Similarity", "align", "build_report", "build_table", "checkpoint_predictor", "eval_config",
    "evaluate", "load_shape", "make_predictors", "make_shape", "mesh_dir_predictor", "point_scores",
    "read_results", "render", "result_path", "sample_surface", "score", "volume_iou", "voxelize",
]
