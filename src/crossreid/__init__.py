"""crossreid: cross-modal person re-identification (RGB, depth, infrared).

The notebook API, imported on first use (``import crossreid`` itself stays light)::

    import crossreid
    catalog = crossreid.load_dataset("sysu_mm01", "/data/SYSU-MM01")
    protocol = crossreid.get_protocol("sysu_mm01", mode="indoor")
    result = crossreid.evaluate_protocol(protocol, catalog, query_features, gallery_features)
    result = crossreid.score_arrays(features, ids, cameras, modalities, "synthetic",
                                    {"query": "rgb", "gallery": "depth"})
    result = crossreid.score_features("feats.npz", "llcm", dataset="llcm", root="/data/LLCM")
    print(result.format_table())
    model = crossreid.load_run("runs/demo/one_stream")       # embed images of any modality it knows
    features = model.embed(["a.png", "b.png"], "depth")
"""

from crossreid.version import __version__

# Public name -> the module that defines it.
API = {
    "load_dataset": "crossreid.data.registry",
    "dataset_names": "crossreid.data.registry",
    "get_protocol": "crossreid.evaluation.protocols",
    "protocol_names": "crossreid.evaluation.protocols",
    "evaluate_protocol": "crossreid.evaluation.protocols",
    "score_features": "crossreid.evaluation.score",
    "score_arrays": "crossreid.evaluation.score",
    "compute_metrics": "crossreid.evaluation.metrics",
    "load_run": "crossreid.retrieval.embedder",
}

__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name in API:
        import importlib

        return getattr(importlib.import_module(API[name]), name)
    raise AttributeError(f"module 'crossreid' has no attribute {name!r}")
