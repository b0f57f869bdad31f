"""A T1 map from a MOLLI series with a trained network: what `cmrfl map t1 --method network` calls.

The network takes any image size: the input is zero-padded to a multiple of the
U-Net's down-sampling factor and the map cropped back, so the map lies on the
series' own pixel grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasks.mapping.data import DEFAULT_MAX_FRAMES, T1_SCALE_MS, network_input
from tasks.mapping.network import build_mapping_unet, size_multiple

TASK_NAME = "mapping"
DEFAULT_CHANNELS = (16, 32, 64, 128)


@torch.no_grad()
def t1_map_ms(
    model: torch.nn.Module,
    frames: np.ndarray,
    inversion_times_ms: Sequence[float] | np.ndarray,
    max_frames: int = DEFAULT_MAX_FRAMES,
    multiple: int = 8,
    device: torch.device | None = None,
) -> np.ndarray:
    """T1 in ms, float32 [row, col], of one series ``frames`` [frame, row, col]."""
    device = device or next(model.parameters()).device
    image = network_input(frames, inversion_times_ms, max_frames)
    rows, columns = image.shape[-2:]
    padded_rows, padded_columns = -(-rows // multiple) * multiple, -(-columns // multiple) * multiple
    batch = torch.nn.functional.pad(image, (0, padded_columns - columns, 0, padded_rows - rows))[None]
    model.eval()
    prediction = model(batch.to(device))[0, 0, :rows, :columns].float().cpu().numpy()
    return (prediction * T1_SCALE_MS).astype(np.float32)


@dataclass(frozen=True)
class SavedMappingNetwork:
    model: torch.nn.Module
    max_frames: int
    channels: tuple[int, ...]

    def t1_map_ms(self, frames: np.ndarray, inversion_times_ms: Sequence[float] | np.ndarray) -> np.ndarray:
        return t1_map_ms(self.model, frames, inversion_times_ms, self.max_frames, size_multiple(self.channels))


def load_mapping_model(model_path: Path | str) -> SavedMappingNetwork:
    """The network from a saved model: a run's final_model.pt or a bare state dict.

    A run's file is ``{"task": "mapping", "state_dict": ...}``, optionally with
    ``"network": {"max_frames": ..., "channels": [...]}`` when it was not trained with
    the task's defaults. A file for another task is refused, naming the file.
    """
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a saved PyTorch model ({type(error).__name__}: {error})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: expected a state dict or a run's final model, found {type(saved).__name__}")
    if "state_dict" in saved:
        task = saved.get("task", TASK_NAME)
        if task != TASK_NAME:
            raise ValueError(f"{path}: a model of task {task!r}, not of the T1-mapping task {TASK_NAME!r}")
        state_dict, network = saved["state_dict"], dict(saved.get("network") or {})
    else:
        state_dict, network = saved, {}
    max_frames = int(network.get("max_frames", DEFAULT_MAX_FRAMES))
    channels = tuple(int(c) for c in network.get("channels", DEFAULT_CHANNELS))
    model = build_mapping_unet(max_frames, channels)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(f"{path}: its weights do not fit the T1-mapping network ({error})") from None
    return SavedMappingNetwork(model.eval(), max_frames, channels)


def predict_t1_map(model_path: Path | str, frames: np.ndarray, inversion_times_ms: np.ndarray) -> np.ndarray:
    """T1 map in ms (float32 [row, col]) of a MOLLI series with the saved network, on the CPU."""
    return load_mapping_model(model_path).t1_map_ms(np.asarray(frames), np.asarray(inversion_times_ms))
