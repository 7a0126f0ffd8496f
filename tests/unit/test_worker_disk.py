"""What the job-disk adapter reads from util-linux and e2fsprogs: which loop devices are
a worker's job disks, and how full a filesystem is. (Making and attaching real disks is
proven by tests/integration/test_hostile_limits.py.)"""

import json
from pathlib import Path

import pytest

from crossfarm.worker.disk import DiskError, JobDisk, free_in_header, full_below, in_listing


def _listing(*pairs):
    return json.dumps({"loopdevices": [{"name": n, "back-file": b} for n, b in pairs]})




def test_a_workers_job_disks_are_found_by_their_image_name_wherever_it_is():
    from crossfarm.worker.disk import _tag  # the name part the adapter writes
    mine = f"crossfarm-disk-{_tag('worker-a')}-j-1234-2.img"
    theirs = f"crossfarm-disk-{_tag('worker-b')}-j-5678-1.img"
    answer = _listing(("/dev/loop0", f"/scratch/a/disks/{mine}"),
                      ("/dev/loop1", f"/scratch/b/disks/{theirs}"),
                      ("/dev/loop2", "/var/lib/other.img"),
                      ("/dev/loop3", f"/scratch/a/disks/{mine} (deleted)"))
    assert in_listing(answer, "worker-a") == [
        JobDisk(Path(f"/scratch/a/disks/{mine}"), "/dev/loop0", "j-1234-2"),
        JobDisk(Path(f"/scratch/a/disks/{mine}"), "/dev/loop3", "j-1234-2"),
    ]


def test_no_loop_devices_means_no_job_disks():
    assert in_listing("", "worker-a") == []
    assert in_listing(json.dumps({"loopdevices": []}), "worker-a") == []


def test_the_free_bytes_come_from_the_superblock_counts():
    header = "Block count:              65536\nFree blocks:              1750\n" \
             "Block size:               1024\n"
    assert free_in_header(header) == 1750 * 1024


def test_an_answer_without_counts_is_a_disk_error():
    with pytest.raises(DiskError):
        free_in_header("dumpe2fs 1.47.0 (5-Feb-2023)\n")


@pytest.mark.parametrize(("size", "threshold"), [
    (64 * 1024**2, 4 * 1024**2),            # small disks: at least 4 MiB of slack
    (20 * 1024**3, int(20 * 1024**3 * 0.03)),  # big ones: 3 %
])
def test_a_disk_is_full_a_little_before_its_last_block(size, threshold):
    assert full_below(size) == threshold
