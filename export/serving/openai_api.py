"""An OpenAI-compatible ``POST /v1/images/generations`` in front of Triton.

It forwards to the ``xomni_text_to_image`` model over gRPC and runs no model itself: Triton
queues, batches and runs the requests. The official ``openai`` client works unchanged; ``seed``
is an extension (the client sends it with ``extra_body``). Bodies are capped in bytes before
they are parsed; bad requests get a 400 in OpenAI's error shape, naming the field.
"""

import base64
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .options import TEXT_TO_IMAGE_MODEL
from .service import MAX_PROMPT_BYTES

#: Largest request body accepted, in bytes.
MAX_BODY_BYTES = 64 * 1024
#: Most images per request.
MAX_IMAGES = 16
SEED_LIMIT = 2**31


class ImageGenerationBody(BaseModel):
    """The body of ``POST /v1/images/generations``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_BYTES)
    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_IMAGES)
    size: str | None = Field(None, pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$", description="WIDTHxHEIGHT")
    response_format: Literal["b64_json"] = "b64_json"
    seed: int | None = Field(None, ge=0, lt=SEED_LIMIT, description="seed of the first image (extension)")
    quality: str | None = None
    style: str | None = None
    user: str | None = None


class RequestRefused(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


def error_body(message: str, *, status: int, param: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def parse_body(raw: bytes) -> ImageGenerationBody:
    """The body as :class:`ImageGenerationBody`; :class:`RequestRefused` names the field at fault."""
    try:
        body = ImageGenerationBody.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        param = ".".join(str(part) for part in error["loc"]) or None
        if error["type"] == "extra_forbidden":
            known = ", ".join(ImageGenerationBody.model_fields)
            message = f"{param}: unknown field; fields are {known}"
        else:
            message = f"{param or 'body'}: {error['msg']}"
        raise RequestRefused(400, message, param) from exc
    if not body.prompt.strip():
        raise RequestRefused(400, "prompt: empty; describe the image to make", "prompt")
    return body


def triton_inputs(body: ImageGenerationBody, seed: int, client: Any) -> list[Any]:
    """The Triton inputs of a request: one row per image, image ``i`` with seed ``seed + i``."""
    rows = body.n
    columns: dict[str, tuple[np.ndarray, str]] = {
        "prompt": (np.array([[body.prompt.encode()]] * rows, dtype=np.object_), "BYTES"),
        "seed": (np.array([[seed + i] for i in range(rows)], dtype=np.int64), "INT64"),
    }
    if body.size is not None:
        width, height = (int(side) for side in body.size.split("x"))
        columns["width"] = (np.full((rows, 1), width, dtype=np.int32), "INT32")
        columns["height"] = (np.full((rows, 1), height, dtype=np.int32), "INT32")
    inputs = []
    for name, (array, datatype) in columns.items():
        tensor = client.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def create_app(
    triton_grpc_url: str,
    *,
    model: str = TEXT_TO_IMAGE_MODEL,
    served_name: str = "xomni",
    request_timeout_s: float = 600.0,
) -> Any:
    """The FastAPI app forwarding image generations to Triton at ``triton_grpc_url``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from tritonclient.grpc import aio as grpc_aio
    from tritonclient.utils import InferenceServerException

    clients: dict[str, Any] = {}

    def client() -> Any:
        if "triton" not in clients:
            clients["triton"] = grpc_aio.InferenceServerClient(triton_grpc_url)
        return clients["triton"]

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        if "triton" in clients:
            await clients.pop("triton").close()

    app = FastAPI(title="xomni", docs_url=None, redoc_url=None, lifespan=lifespan)

    async def read_capped(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise RequestRefused(
                413, f"request body of {declared} bytes; at most {MAX_BODY_BYTES} are accepted"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise RequestRefused(413, f"request body over {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/v1/images/generations")
    async def generations(request: Request) -> Any:
        try:
            body = parse_body(await read_capped(request))
            if body.model not in (None, served_name, model):
                raise RequestRefused(
                    404, f"model {body.model!r} is not served here; use {served_name!r}", "model"
                )
            seed = secrets.randbelow(SEED_LIMIT - MAX_IMAGES) if body.seed is None else body.seed
            try:
                result = await client().infer(
                    model,
                    triton_inputs(body, seed, grpc_aio),
                    outputs=[grpc_aio.InferRequestedOutput("png")],
                    client_timeout=request_timeout_s,
                )
            except InferenceServerException as exc:
                raise _refusal(exc) from exc
        except RequestRefused as exc:
            return JSONResponse(
                error_body(str(exc), status=exc.status, param=exc.param), status_code=exc.status
            )
        pngs = result.as_numpy("png").reshape(-1)
        data = [
            {"b64_json": base64.b64encode(png).decode(), "revised_prompt": body.prompt, "seed": seed + i}
            for i, png in enumerate(pngs)
        ]
        return {"created": int(time.time()), "data": data}

    @app.get("/v1/models")
    async def models() -> Any:
        return {"object": "list", "data": [{"id": served_name, "object": "model", "owned_by": "xomni"}]}

    @app.get("/health")
    async def health() -> Any:
        try:
            ready = await client().is_model_ready(model)
        except InferenceServerException:
            ready = False
        return JSONResponse({"ready": bool(ready)}, status_code=200 if ready else 503)

    return app


def _refusal(exc: Any) -> RequestRefused:
    """Triton's error as the status a client should see: its 4xx stays 4xx, an unreachable
    server is 503, a timeout 504."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if status in ("StatusCode.INVALID_ARGUMENT", "400"):
        return RequestRefused(400, message)
    if status in ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"):
        return RequestRefused(503, f"the model server is unavailable: {message}")
    if status == "StatusCode.DEADLINE_EXCEEDED":
        return RequestRefused(504, "the model server did not answer in time")
    return RequestRefused(502, f"the model server failed: {message}")
