"""Fixes to moto 5.2 that make its EBS direct APIs behave like real AWS.

`launch.py` calls `apply_all()` once, before the threaded server starts. Every
patch is a function below; its docstring says what moto does, what real AWS
does (names from the "Amazon EBS direct APIs" API reference), and what the
patch changes. The patches replace methods on moto's classes, so they hold for
every account and region and survive a `POST /moto-api/reset`.

Each gap was checked against moto 5.2.5 (moto/ebs/models.py, moto/ebs/responses.py,
moto/ec2/models/elastic_block_store.py) before it was patched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ebs.models import EBSBackend, EBSSnapshot, ebs_backends
from moto.ebs.responses import EBSResponse
from moto.ec2.models.elastic_block_store import EBSBackend as Ec2EbsMixin

# Real AWS: every EBS direct API block is 512 KiB.
BLOCK_SIZE = 524288
BLOCKS_PER_GIB = (1 << 30) // BLOCK_SIZE
# ListSnapshotBlocks / ListChangedBlocks: MaxResults is 100..10000.
MIN_RESULTS, MAX_RESULTS = 100, 10000


class ResourceNotFoundException(ServiceException):
    """EBS `ResourceNotFoundException`: HTTP 404, body {"Message", "Reason"}.

    moto serializes it as rest-json: header `x-amzn-ErrorType`, JSON body with
    `__type`, `Message` and `Reason`, which is what botocore and aws-sdk-rust
    read (the header first, then `code`/`__type` of the body).
    """

    code = "ResourceNotFoundException"

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason


class ValidationException(ServiceException):
    """EBS `ValidationException`: HTTP 400, body {"Message", "Reason"}."""

    code = "ValidationException"

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason


def _snapshot(backend: EBSBackend, snapshot_id: str) -> EBSSnapshot:
    try:
        return backend.snapshots[snapshot_id]
    except KeyError:
        raise ResourceNotFoundException(
            f"The snapshot '{snapshot_id}' does not exist.", "SNAPSHOT_NOT_FOUND"
        ) from None


def _register(account_id: str, region: str, snapshot: Any, blocks: dict) -> None:
    """Gives an EC2 snapshot an EBS-direct view holding `blocks` (shared, not copied)."""
    ebs_snapshot = EBSSnapshot(account_id=account_id, snapshot=snapshot)
    ebs_snapshot.status = "completed"
    ebs_snapshot.blocks = dict(blocks)
    ebs_backends[account_id][region].snapshots[snapshot.id] = ebs_snapshot


def _wrap(cls: type, name: str, make: Callable[[Callable], Callable]) -> None:
    """Replaces `cls.name` by `make(original)`."""
    original = getattr(cls, name)
    replacement = make(original)
    replacement.__name__ = name
    replacement.__doc__ = original.__doc__
    setattr(cls, name, replacement)


def _page(indices: list[int], response: EBSResponse) -> tuple[list[int], str | None]:
    """One page of sorted block indices per MaxResults, NextToken, StartingBlockIndex.

    Real AWS: `NextToken`, when given, wins over `StartingBlockIndex`; the page
    starts at that block index or the next one present; `NextToken` is absent
    on the last page. The token here is the base64 of the next index.
    """
    max_results = response._get_param("MaxResults")
    max_results = MAX_RESULTS if max_results is None else int(max_results)
    if not MIN_RESULTS <= max_results <= MAX_RESULTS:
        raise ValidationException(
            f"MaxResults must be between {MIN_RESULTS} and {MAX_RESULTS}.",
            "INVALID_PARAMETER_VALUE",
        )
    token = response._get_param("NextToken")
    if token:
        try:
            start = int(base64.b64decode(token, validate=True).decode())
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise ValidationException(
                "The pagination token is invalid.", "INVALID_PAGE_TOKEN"
            ) from None
    else:
        start = int(response._get_param("StartingBlockIndex") or 0)
    rest = [i for i in sorted(indices) if i >= start]
    if len(rest) <= max_results:
        return rest, None
    return rest[:max_results], base64.b64encode(str(rest[max_results]).encode()).decode()


def patch_block_size() -> None:
    """`StartSnapshot`, `ListSnapshotBlocks`, `ListChangedBlocks`: BlockSize.

    moto: `EBSSnapshot.block_size = 512`.
    Real AWS: `BlockSize` is 524288 bytes (512 KiB) for every snapshot.
    Patch: every EBS snapshot reports 524288.
    """

    def make(original: Callable) -> Callable:
        def __init__(self: EBSSnapshot, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            self.block_size = BLOCK_SIZE

        return __init__

    _wrap(EBSSnapshot, "__init__", make)


def patch_not_found_errors() -> None:
    """A missing snapshot or block: `ResourceNotFoundException`, not HTML 500.

    moto: the backend indexes dicts directly, so an unknown snapshot id or block
    index raises KeyError, served as an HTML 500 page; the SDKs retry it and then
    fail with "malformed JSON error body".
    Real AWS: `ResourceNotFoundException` (HTTP 404, `Reason` SNAPSHOT_NOT_FOUND)
    for an unknown snapshot in every EBS direct API call.
    Patch: unknown snapshot -> ResourceNotFoundException/SNAPSHOT_NOT_FOUND in
    `CompleteSnapshot`, `PutSnapshotBlock`, `GetSnapshotBlock`; a block index that
    was never written -> ResourceNotFoundException (no `Reason`: the API has no
    reason for it; real AWS may answer ValidationException/INVALID_BLOCK_TOKEN,
    as no valid token exists for such a block); a `BlockToken` that is not the
    token of that block -> ValidationException/INVALID_BLOCK_TOKEN. The list
    calls get the same check in their own patches.
    """

    def complete_snapshot(self: EBSBackend, snapshot_id: str) -> str:
        snapshot = _snapshot(self, snapshot_id)
        snapshot.status = "completed"
        return "completed"

    def make_put(original: Callable) -> Callable:
        def put_snapshot_block(self: EBSBackend, snapshot_id: str, *args: Any, **kw: Any):
            _snapshot(self, snapshot_id)
            return original(self, snapshot_id, *args, **kw)

        return put_snapshot_block

    def get_block(self: EBSResponse) -> ActionResult:
        snapshot = _snapshot(self.ebs_backend, self._get_param("SnapshotId"))
        index = int(self._get_param("BlockIndex"))
        block = snapshot.blocks.get(index)
        if block is None:
            raise ResourceNotFoundException(
                f"Block {index} does not exist in snapshot {snapshot.snapshot_id}."
            )
        token = self._get_param("BlockToken")
        if token is not None and token != block.block_token:
            raise ValidationException("The block token is invalid.", "INVALID_BLOCK_TOKEN")
        return ActionResult(
            {
                "DataLength": block.data_length or len(block.block_data),
                "BlockData": block.block_data,
                "Checksum": block.checksum,
                "ChecksumAlgorithm": block.checksum_algorithm,
            }
        )

    EBSBackend.complete_snapshot = complete_snapshot
    _wrap(EBSBackend, "put_snapshot_block", make_put)
    EBSResponse.get_snapshot_block = get_block


def patch_put_block_checks() -> None:
    """`PutSnapshotBlock` validates what real AWS validates.

    moto: stores any data; "Checksum and ChecksumAlgorithm are taken at face-value".
    Real AWS: `BlockData` is exactly 524288 bytes, `DataLength` equals it,
    `Checksum` is the base64 SHA-256 of the data (`ChecksumAlgorithm` SHA256), and
    `BlockIndex` lies inside the volume (VolumeSize GiB / 512 KiB blocks);
    otherwise ValidationException.
    Patch: the same checks (the `Reason` values are a best guess: INVALID_BLOCK
    for a bad index, size or checksum). Fixtures that pass here are valid uploads.
    """

    def make(original: Callable) -> Callable:
        def put_snapshot_block(
            self: EBSBackend,
            snapshot_id: str,
            block_index: int,
            block_data: bytes,
            checksum: str | None,
            checksum_algorithm: str | None,
            data_length: int | None,
        ):
            snapshot = _snapshot(self, snapshot_id)
            block_index = int(block_index)
            if not 0 <= block_index < snapshot.volume_size * BLOCKS_PER_GIB:
                raise ValidationException(
                    f"Block index {block_index} is outside the volume.", "INVALID_BLOCK"
                )
            if len(block_data) != BLOCK_SIZE or int(data_length or 0) != BLOCK_SIZE:
                raise ValidationException(
                    f"Block data and DataLength must be {BLOCK_SIZE} bytes.", "INVALID_BLOCK"
                )
            if (
                checksum_algorithm != "SHA256"
                or checksum != base64.b64encode(hashlib.sha256(block_data).digest()).decode()
            ):
                raise ValidationException(
                    "The checksum does not match the block data.", "INVALID_BLOCK"
                )
            return original(
                self,
                snapshot_id,
                block_index,
                block_data,
                checksum,
                checksum_algorithm,
                BLOCK_SIZE,
            )

        return put_snapshot_block

    _wrap(EBSBackend, "put_snapshot_block", make)


def patch_list_snapshot_blocks() -> None:
    """`ListSnapshotBlocks`: sorted, paginated, honours StartingBlockIndex.

    moto: returns every block in insertion order and ignores `MaxResults`,
    `NextToken` and `StartingBlockIndex`.
    Real AWS: `Blocks` sorted by `BlockIndex`; at most `MaxResults` (100..10000)
    per page; `NextToken` while more remain; the list starts at
    `StartingBlockIndex` (or the next index present) unless `NextToken` is given.
    Patch: exactly that; MaxResults outside 100..10000 -> ValidationException.
    """

    def list_snapshot_blocks(self: EBSResponse) -> ActionResult:
        snapshot = _snapshot(self.ebs_backend, self._get_param("SnapshotId"))
        indices, next_token = _page(list(snapshot.blocks), self)
        result = {
            "Blocks": [
                {"BlockIndex": i, "BlockToken": snapshot.blocks[i].block_token} for i in indices
            ],
            "VolumeSize": snapshot.volume_size,
            "BlockSize": snapshot.block_size,
        }
        if next_token:
            result["NextToken"] = next_token
        return ActionResult(result)

    EBSResponse.list_snapshot_blocks = list_snapshot_blocks


def patch_list_changed_blocks() -> None:
    """`ListChangedBlocks`: both snapshots, by block token, paginated.

    moto: walks only the blocks of the first snapshot (a block written only in
    the second is never listed), compares data rather than blocks, ignores
    pagination, and needs `FirstSnapshotId`.
    Real AWS: lists the indices whose block differs between `FirstSnapshotId`
    and `SecondSnapshotId`, with `FirstBlockToken` / `SecondBlockToken` (each
    absent where that snapshot has no block), sorted, paginated like
    `ListSnapshotBlocks`. A block a child inherited from its parent
    (`StartSnapshot` ParentSnapshotId) is the same block, so it is unchanged.
    Patch: the union of both snapshots' indices, compared by block token, so
    inherited blocks are not listed; without `FirstSnapshotId` every block of the
    second snapshot is listed. Not emulated: UNRELATED_SNAPSHOTS validation.
    """

    def list_changed_blocks(self: EBSResponse) -> ActionResult:
        second = _snapshot(self.ebs_backend, self._get_param("SecondSnapshotId"))
        first_id = self._get_param("FirstSnapshotId")
        first_blocks = _snapshot(self.ebs_backend, first_id).blocks if first_id else {}

        def token(blocks: dict, index: int) -> str | None:
            block = blocks.get(index)
            return block.block_token if block else None

        changed = [
            i
            for i in set(first_blocks) | set(second.blocks)
            if token(first_blocks, i) != token(second.blocks, i)
        ]
        indices, next_token = _page(changed, self)
        blocks = []
        for i in indices:
            entry: dict[str, Any] = {"BlockIndex": i}
            if token(first_blocks, i):
                entry["FirstBlockToken"] = token(first_blocks, i)
            if token(second.blocks, i):
                entry["SecondBlockToken"] = token(second.blocks, i)
            blocks.append(entry)
        result = {
            "ChangedBlocks": blocks,
            "VolumeSize": second.volume_size,
            "BlockSize": second.block_size,
        }
        if next_token:
            result["NextToken"] = next_token
        return ActionResult(result)

    EBSResponse.list_changed_blocks = list_changed_blocks


def patch_start_snapshot() -> None:
    """`StartSnapshot`: ParentSnapshotId, pending state, no phantom volume.

    moto: ignores `ParentSnapshotId`; the EC2 view of the snapshot says
    `completed` at once; and a made-up EC2 volume stays behind in DescribeVolumes.
    Real AWS: a snapshot started with `ParentSnapshotId` is incremental: it holds
    the parent's blocks until they are overwritten (`ListSnapshotBlocks` lists
    them, `GetSnapshotBlock` reads them); DescribeSnapshots says `pending` until
    `CompleteSnapshot`; no volume is created (the snapshot's VolumeId is
    vol-ffffffff).
    Patch: the child starts with the parent's block objects (same tokens), the
    EC2 state follows pending -> completed, and the helper volume is removed
    from EC2's volume list (the snapshot keeps it for its size). An unknown
    parent -> ResourceNotFoundException/SNAPSHOT_NOT_FOUND.
    """

    def start_snapshot(self: EBSResponse) -> ActionResult:
        backend = self.ebs_backend
        parent_id = self._get_param("ParentSnapshotId")
        parent = _snapshot(backend, parent_id) if parent_id else None
        snapshot = backend.start_snapshot(
            volume_size=self._get_param("VolumeSize"),
            tags=self._get_param("Tags"),
            description=self._get_param("Description"),
        )
        ec2_snapshot = backend.ec2_backend.snapshots[snapshot.snapshot_id]
        ec2_snapshot.status = "pending"
        backend.ec2_backend.volumes.pop(ec2_snapshot.volume.id, None)
        if parent is not None:
            snapshot.blocks = dict(parent.blocks)
        result = {
            "SnapshotId": snapshot.snapshot_id,
            "OwnerId": snapshot.account_id,
            "Status": snapshot.status,
            "StartTime": snapshot.start_time,
            "VolumeSize": snapshot.volume_size,
            "BlockSize": snapshot.block_size,
            "Tags": snapshot.tags,
            "Description": snapshot.description,
        }
        if parent_id:
            result["ParentSnapshotId"] = parent_id
        return ActionResult(result)

    def make_complete(original: Callable) -> Callable:
        def complete_snapshot(self: EBSBackend, snapshot_id: str) -> str:
            status = original(self, snapshot_id)
            ec2_snapshot = self.ec2_backend.snapshots.get(snapshot_id)
            if ec2_snapshot is not None:
                ec2_snapshot.status = "completed"
            return status

        return complete_snapshot

    EBSResponse.start_snapshot = start_snapshot
    _wrap(EBSBackend, "complete_snapshot", make_complete)


def patch_ec2_snapshot_blocks() -> None:
    """EC2 `CreateSnapshot` / `CopySnapshot` / `DeleteSnapshot` and EBS block data.

    moto: the EC2 and EBS backends keep separate snapshot tables. A snapshot
    made by EC2 `CreateSnapshot` has no EBS entry, so EBS direct calls on it fail;
    EC2 `DeleteSnapshot` leaves the EBS entry and its blocks readable.
    Real AWS: every EC2 snapshot is readable through the EBS direct APIs; a
    snapshot of a volume holds that volume's data; a deleted snapshot is gone
    (ResourceNotFoundException).
    Patch: `CreateSnapshot` (and `CreateSnapshots`, which calls it) gives the new
    snapshot the blocks of the snapshot its volume was created from (moto keeps
    no volume data, so a volume is taken to hold exactly its source snapshot's
    blocks; a blank volume's snapshot has none); `CopySnapshot` carries the
    source's blocks; `DeleteSnapshot` drops the EBS entry and its blocks.
    """

    def blocks_of(account_id: str, region: str, snapshot_id: str | None) -> dict:
        if not snapshot_id:
            return {}
        source = ebs_backends[account_id][region].snapshots.get(snapshot_id)
        return source.blocks if source else {}

    def make_create(original: Callable) -> Callable:
        def create_snapshot(self: Any, volume_id: str, *args: Any, **kw: Any):
            snapshot = original(self, volume_id, *args, **kw)
            source_id = self.get_volume(volume_id).snapshot_id
            blocks = blocks_of(self.account_id, self.region_name, source_id)
            _register(self.account_id, self.region_name, snapshot, blocks)
            return snapshot

        return create_snapshot

    def make_copy(original: Callable) -> Callable:
        def copy_snapshot(
            self: Any, source_snapshot_id: str, source_region: str, *a: Any, **kw: Any
        ):
            snapshot = original(self, source_snapshot_id, source_region, *a, **kw)
            blocks = blocks_of(self.account_id, source_region, source_snapshot_id)
            _register(self.account_id, self.region_name, snapshot, blocks)
            return snapshot

        return copy_snapshot

    def make_delete(original: Callable) -> Callable:
        def delete_snapshot(self: Any, snapshot_id: str):
            snapshot = original(self, snapshot_id)
            ebs_backends[self.account_id][self.region_name].snapshots.pop(snapshot_id, None)
            return snapshot

        return delete_snapshot

    _wrap(Ec2EbsMixin, "create_snapshot", make_create)
    _wrap(Ec2EbsMixin, "copy_snapshot", make_copy)
    _wrap(Ec2EbsMixin, "delete_snapshot", make_delete)


PATCHES = [
    patch_block_size,
    patch_not_found_errors,
    patch_put_block_checks,
    patch_list_snapshot_blocks,
    patch_list_changed_blocks,
    patch_start_snapshot,
    patch_ec2_snapshot_blocks,
]

_applied = False


def apply_all() -> list[str]:
    """Applies every patch once; returns their names."""
    global _applied
    if not _applied:
        for patch in PATCHES:
            patch()
        _applied = True
    return [patch.__name__ for patch in PATCHES]
