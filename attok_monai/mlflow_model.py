"""A trained AttTok model as an MLflow Model (``python_function`` flavour): images in, answers and probabilities out.

The model folder a training run writes (``runs/<run>/model``: weights, backbone config, tokenizer, vocabulary,
question templates) is the MLflow Model's one artifact, and :class:`AttTokPyfuncModel` answers with it, so
``mlflow.pyfunc.load_model``, ``mlflow models serve`` and the model registry all work on a logged run.

Input: a ``pandas.DataFrame`` with a column ``image``: each cell the **base64-encoded bytes of an image file** (PNG,
JPEG, TIFF, BMP or DICOM; what :func:`encode_image` returns for a path), which travels in a JSON request to
``mlflow models serve``. An optional column ``question`` asks another question per row (default: the bundle's first
open-ended template, what ``inference`` asks).

Output: a ``pandas.DataFrame`` with one row per image: ``question``, ``answer`` (the generated text, attribute tokens
kept), ``attribute`` (the predicted attribute token), ``diagnosis`` (its clinical name), ``probability`` (of that
attribute) and ``p_<attribute name>`` for every attribute (``AttTokGPTv.class_probabilities``). Images are
prepared as ``inference`` prepares them (``attok_monai.engines.inference.inference_transforms``: channels, longest
side to the training size, centred padding, [0, 1]).

:func:`log_attok_model` logs the model into an existing run with a signature and an input example; the pip
requirements are given explicitly (the installed versions of the packages the model imports), so nothing is
inferred or downloaded at log time, and the ``attok_monai`` package travels with the model (``code_paths``), so a
serving environment needs only the listed packages.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

__all__ = ["AttTokPyfuncModel", "encode_image", "log_attok_model", "pip_requirements", "use_tracking_uri", "MODEL_ARTIFACT"]

MODEL_ARTIFACT = "model"  # key of the model folder in the MLflow Model's artifacts
# packages the pyfunc imports at load time (attok_monai itself ships as code)
_REQUIREMENTS = ("torch", "monai", "transformers", "tokenizers", "numpy", "pandas", "pillow", "pydicom", "nibabel",
                 "pytorch-ignite", "mlflow")
_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp"}


def encode_image(path: str | os.PathLike) -> str:
    """The base64 text of an image file's bytes: one cell of the ``image`` column."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _suffix(data: bytes) -> str:
    """The file suffix the readers need for these bytes (PIL formats, else DICOM by its ``DICM`` preamble)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except UnidentifiedImageError:
        fmt = None
    if fmt in _SUFFIXES:
        return _SUFFIXES[fmt]
    if data[128:132] == b"DICM":
        return ".dcm"
    raise ValueError(f"AttTokPyfuncModel: an image cell is neither {sorted(_SUFFIXES)} nor DICOM (format {fmt}).")


class AttTokPyfuncModel(mlflow.pyfunc.PythonModel):
    """``python_function`` model over an AttTok model folder (the artifact ``model``).

    ``predict(context, model_input)``: ``model_input`` a DataFrame with ``image`` (base64 file bytes) and optional
    ``question``; returns the DataFrame described in the module docstring. ``params`` may set ``max_new_tokens``
    (default 16).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import torch

        from attok_monai.data.instructions import InstructionTemplates
        from attok_monai.engines.inference import inference_transforms
        from attok_monai.networks.nets import AttTokGPTv

        model_dir = Path(context.artifacts[MODEL_ARTIFACT])
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AttTokGPTv.from_pretrained(model_dir, map_location=self.device).to(self.device)
        self.templates = InstructionTemplates.from_json(str(model_dir / "templates.json"))
        backbone = json.loads((model_dir / "backbone.json").read_text())
        vision = backbone.get("vision", {})
        size = int(vision.get("img_size") or backbone.get("image_size") or 224)
        self.transform = inference_transforms(size, channels=int(vision.get("in_channels", 3)))

    def _images(self, cells: Sequence[Any]):
        import torch

        images = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, cell in enumerate(cells):
                data = bytes(cell) if isinstance(cell, (bytes, bytearray)) else base64.b64decode(str(cell))
                path = Path(tmp) / f"image{i}{_suffix(data)}"
                path.write_bytes(data)
                images.append(torch.as_tensor(self.transform({"image": str(path)})["image"]).float())
        return torch.stack(images).to(self.device)

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        import torch

        from attok_monai.metrics import parse_prediction

        if "image" not in model_input.columns:
            raise ValueError("AttTokPyfuncModel: the input needs a column 'image' (base64 image file bytes).")
        default = self.templates.question("open")
        questions = (
            [q if isinstance(q, str) and q.strip() else default for q in model_input["question"]]
            if "question" in model_input.columns else [default] * len(model_input)
        )
        max_new_tokens = int((params or {}).get("max_new_tokens", 16))
        images = self._images(list(model_input["image"]))
        vocab = self.model.vocabulary
        with torch.no_grad():
            answers = self.model.generate(images, questions, max_new_tokens)
            probs = self.model.class_probabilities(images, questions).float().cpu()
        rows = []
        for i, answer in enumerate(answers):
            k = parse_prediction(vocab, answer)
            row = {
                "question": questions[i],
                "answer": answer,
                "attribute": vocab.token(k) if k >= 0 else "",
                "diagnosis": vocab.names[k] if k >= 0 else "",
                "probability": float(probs[i, k]) if k >= 0 else float("nan"),
            }
            row.update({f"p_{a.name}": float(probs[i, j]) for j, a in enumerate(vocab)})
            rows.append(row)
        return pd.DataFrame(rows)


@contextmanager
def use_tracking_uri(uri: str | None) -> Iterator[None]:
    """MLflow's fluent API (``Model.log``) on tracking URI ``uri`` inside the block (``None``: unchanged), then the
    previous state back, the ``MLFLOW_TRACKING_URI`` environment variable included: ``mlflow.set_tracking_uri``
    also sets that variable, and MONAI's ``MLFlowHandler`` lets it override its own ``tracking_uri``, so a leaked
    value would send the next training run of the same process to this store."""
    if not uri:
        yield
        return
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def pip_requirements() -> list[str]:
    """``name==version`` of the installed packages the pyfunc imports (no environment inference, no download)."""
    from attok_monai.provenance import package_versions

    return [f"{name}=={v.split('+')[0]}" for name, v in package_versions(_REQUIREMENTS).items() if v]


def _signature(vocabulary_names: Sequence[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "image"), ColSpec("string", "question", required=False)])
    outputs = Schema(
        [ColSpec("string", c) for c in ("question", "answer", "attribute", "diagnosis")]
        + [ColSpec("double", "probability")] + [ColSpec("double", f"p_{n}") for n in vocabulary_names]
    )
    return ModelSignature(inputs, outputs, ParamSchema([ParamSpec("max_new_tokens", "long", 16)]))


def log_attok_model(
    model_dir: str | os.PathLike,
    run_id: str,
    tracking_uri: str | None = None,
    name: str = "mlflow_model",
    example_image: str | os.PathLike | None = None,
    registered_model_name: str | None = None,
) -> Any:
    """Log a model folder as an MLflow Model (``python_function``) into run ``run_id``.

    Args:
        model_dir: a ``save_pretrained`` folder with ``templates.json`` (``runs/<run>/model``).
        run_id: the MLflow run to log into (e.g. ``MLFlowHandler.cur_run.info.run_id``).
        tracking_uri: the run's tracking URI (``None`` = MLflow's current one).
        name: the model's name in the run; it loads back as ``runs:/<run_id>/<name>``.
        example_image: an image file for the input example (``None``: no example is stored).
        registered_model_name: also register the model under this name in the model registry.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ``model_id``, ...).
    """
    import attok_monai
    from attok_monai.attributes import AttributeVocabulary

    model_dir = Path(model_dir)
    vocab = AttributeVocabulary.from_json(model_dir / "vocabulary.json")
    example = pd.DataFrame({"image": [encode_image(example_image)]}) if example_image else None
    with use_tracking_uri(tracking_uri):
        client = mlflow.MlflowClient()
        run = client.get_run(run_id)
        # created here so the model belongs to the run's experiment (MLflow would use the active experiment)
        logged = client.create_logged_model(
            experiment_id=run.info.experiment_id, name=name, source_run_id=run_id,
            params={k: str(v) for k, v in run.data.params.items()},
        )
        return mlflow.models.Model.log(
            artifact_path=None,
            name=name,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            python_model=AttTokPyfuncModel(),
            artifacts={MODEL_ARTIFACT: str(model_dir)},
            code_paths=[str(Path(attok_monai.__file__).parent)],
            pip_requirements=pip_requirements(),
            signature=_signature([a.name for a in vocab]),
            input_example=example,
            registered_model_name=registered_model_name,
        )
