"""What the steps of one run share: its progress reporter, ranks, device and run record."""

from dataclasses import dataclass

from ..io.hashing import sha256_of_bytes
from ..io.provenance import MIXED_OPTION, check_embedded_alike, embedded_with
from ..io.records import RunRecord
from ..io.vectors import load_vector_block, load_vectors
from ..runtime.distributed import Ranks
from ..runtime.reporting import Reporter, device_summary


@dataclass
class Session:
    """One run's context, made once at its start and passed to each step."""

    report: Reporter
    ranks: Ranks
    device: str
    record: RunRecord

    def where(self, gpu_id):
        """The device, for the summary line (``device_summary``)."""
        return device_summary(self.device, gpu_id, self.ranks)

    def load_embeddings(self, path, progress, allow_zero=False, embedding_field=None):
        """Embedding vectors (``utils.io.vectors``): all of them in one process; under
        ``torchrun`` this rank's block of rows (``ranks.block``), with global offsets."""
        if self.ranks.grouped:
            return load_vector_block(path, self.ranks.block, progress, allow_zero=allow_zero,
                                     embedding_field=embedding_field,
                                     shard_digest=sha256_of_bytes)
        return load_vectors(path, progress, allow_zero=allow_zero,
                            embedding_field=embedding_field)

    def check_embedded_alike(self, sets, allow_mixed):
        """Before any vectors load: refuse embedding sets (``(what, path)`` pairs, None paths
        left out) whose recorded model or --max_length differ, unless ``allow_mixed``; the run
        record names what embedded each set."""
        with self.ranks.phase():
            found = [embedded_with(f"{what} {path}", path) for what, path in sets if path]
            mixed, notice = check_embedded_alike(found, allow_mixed)
        if mixed:
            self.report.notice(f"{mixed}; going on as {MIXED_OPTION} asks")
        if notice:
            self.report.notice(notice)
        self.record.embedded_with = {"sets": {s.what: s.describe() for s in found},
                                     "mixed": mixed}
