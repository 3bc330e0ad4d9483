"""Audio inputs at the HTTP edge: a direct file, an earlier upload, or a URL fetched now.

Every input is validated by `infra/uploads.py` before anything else sees it; these helpers only read
the request and map "which input" mistakes to `input_required`.
"""

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from deployments.http.errors import ApiError
from deployments.http.guards import EdgeRoute
from deployments.http.quotas import charge_processed
from deployments.http.services import Authorized, CurrentTenant, Services, Svc
from deployments.http.url_inputs import fetch_url
from infra.audio import Audio
from infra.tenancy import Tenant
from infra.uploads import UploadInfo, decode_input, load_upload, store_upload, upload_info

UPLOAD_ID_PATTERN = "^[0-9a-f]{32}$"
FileField = Annotated[UploadFile | None, File(description="An audio file (WAV, FLAC, OGG, MP3).")]
UploadIdField = Annotated[str | None, Form(pattern=UPLOAD_ID_PATTERN, description="Instead of `file`.")]

router = APIRouter(route_class=EdgeRoute, tags=["audio"], dependencies=[Authorized])


@router.post("/v1/uploads", status_code=201)
async def create_upload(svc: Svc, tenant: CurrentTenant, file: Annotated[UploadFile, File()]) -> UploadInfo:
    """Validate and keep an audio file; refer to it later by `upload_id` (the caller's tenant only)."""
    # The form parser spooled the file to disk; it is validated and copied to S3 from there.
    return await asyncio.to_thread(
        store_upload, svc.storage, file.file, file.filename, svc.settings, tenant.id
    )


def require_one(given: dict[str, object], names: str) -> None:
    """422 `input_required` unless exactly one of the inputs in `given` is present."""
    if sum(value is not None for value in given.values()) != 1:
        raise ApiError(422, "input_required", f"send exactly one of {names}")


async def stored_input(
    svc: Services, tenant: Tenant, file: UploadFile | None, upload_id: str | None, url: str | None
) -> str:
    """The input as an upload id: a direct file, or the body at `url` (fetched now), is validated and
    stored as an upload first; an `upload_id` must exist (404)."""
    if upload_id is not None:
        await asyncio.to_thread(upload_info, svc.storage, upload_id, None if tenant.admin else tenant.id)
        return upload_id
    if url is not None:
        fetched, name = await fetch_url(url, svc.settings)
        with fetched:
            stored = await asyncio.to_thread(
                store_upload, svc.storage, fetched, name, svc.settings, tenant.id
            )
        return stored.upload_id
    assert file is not None
    stored = await asyncio.to_thread(
        store_upload, svc.storage, file.file, file.filename, svc.settings, tenant.id
    )
    return stored.upload_id


async def input_audio(svc: Services, tenant: Tenant, file: UploadFile | None, upload_id: str | None) -> Audio:
    """The request's audio for a synchronous route: a direct file or an earlier upload; its duration is
    charged to the tenant's audio-seconds (429 over the quota)."""
    require_one({"file": file, "upload_id": upload_id}, "`file` (multipart) or `upload_id`")
    if upload_id is not None:
        await asyncio.to_thread(upload_info, svc.storage, upload_id, None if tenant.admin else tenant.id)
        audio = await asyncio.to_thread(load_upload, svc.storage, upload_id, svc.settings)
    else:
        assert file is not None
        audio = await asyncio.to_thread(decode_input, file.file, svc.settings)
    await charge_processed(svc.quotas, svc.settings, tenant, audio.duration_s)
    return audio
