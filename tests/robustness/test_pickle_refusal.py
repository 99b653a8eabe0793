"""Pickle files are never unpickled beyond tensors: a refusal names the file and the global it
asked for, and FLUX text encoders are read from safetensors only."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch

from xomni_core import CheckpointError
from xomni_core.pickles import load_tensors_only
from xomni_core.training.checkpoint import STATE_FILE, load_trainer_state
from xomni_plugins.converters.x_omni.converter import load_state_dict_file


def pickle_calling(module: str, name: str, argument: str) -> bytes:
    """Protocol-2 opcodes for ``module.name(argument)``: GLOBAL, the argument tuple, REDUCE."""
    text = argument.encode()
    return (
        b"\x80\x02"  # PROTO 2
        + b"c"
        + f"{module}\n{name}\n".encode()  # GLOBAL module.name
        + b"X"
        + len(text).to_bytes(4, "little")
        + text  # BINUNICODE argument
        + b"\x85"  # TUPLE1
        + b"R"  # REDUCE
        + b"."  # STOP
    )


class Payload:
    """An object of a class defined here, which a tensors-only load must refuse."""


def assert_clear_refusal(message: str, path: Path, global_name: str) -> None:
    assert str(path) in message
    assert f"the file needs the global '{global_name}', which is not allowed" in message
    assert "weights_only=False" not in message and "add_safe_globals" not in message


def test_a_state_dict_calling_os_system_is_refused_naming_the_global(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "vq_projector.pt"
    path.write_bytes(pickle_calling("os", "system", f"touch {marker}"))
    with pytest.raises(CheckpointError) as caught:
        load_state_dict_file(path, "VQ projector state dict")
    assert_clear_refusal(str(caught.value), path, "os.system")
    assert not marker.exists()


def test_an_object_of_a_local_class_is_refused_naming_its_class(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2), "extra": Payload()}, path)
    with pytest.raises(CheckpointError) as caught:
        load_tensors_only(path, "weights")
    assert_clear_refusal(str(caught.value), path, f"{__name__}.Payload")


def test_a_training_state_with_code_is_refused_naming_the_file_and_the_global(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(pickle_calling("subprocess", "getoutput", "true"))
    with pytest.raises(CheckpointError) as caught:
        load_trainer_state(tmp_path)
    assert_clear_refusal(str(caught.value), tmp_path / STATE_FILE, "subprocess.getoutput")


def test_a_damaged_training_state_is_a_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"\x80\x02}q\x00")  # cut short
    with pytest.raises(CheckpointError, match=STATE_FILE):
        load_trainer_state(tmp_path)


def test_a_flux_text_encoder_stored_as_a_pickle_is_refused_naming_the_file(tmp_path: Path) -> None:
    from core.test_convert import DECODER

    from xomni_plugins.decoders.flux_semantic.model import FluxSemanticDecoder

    folder = tmp_path / "decoder"
    FluxSemanticDecoder.from_params(DECODER, seed=0).save_pretrained(folder)
    encoder = folder / "text_encoder"
    for weights in encoder.glob("*.safetensors"):
        weights.unlink()
    (encoder / "pytorch_model.bin").write_bytes(pickle_calling("os", "system", "true"))
    with pytest.raises(CheckpointError) as caught:
        FluxSemanticDecoder.from_pretrained(folder)
    message = str(caught.value)
    assert str(encoder) in message and "pytorch_model.bin" in message and "safetensors" in message
    assert "weights_only=False" not in message


def test_the_opcodes_really_call_the_global() -> None:
    """The test pickles above are what they claim: unrestricted unpickling would run the call."""
    calls = []

    class Recording(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            return lambda *args: calls.append((module, name, args))

    Recording(io.BytesIO(pickle_calling("os", "system", "true"))).load()
    assert calls == [("os", "system", ("true",))]
