"""pgsnapman.v1 from Python: a client generated from proto/ with grpcio-tools
drives a real coordinator end to end (docs/api.md). Run by the e2e test
`python_api`, which starts the catalog, the coordinator and a source cluster
and passes them in PGSNAPMAN_API_* variables; this module registers and
starts a worker itself, adds an instance and a job, dumps now, follows the
task through the WatchTask stream, reads the catalog, and restores.
"""
import os
import pathlib
import subprocess
import sys
import time

import grpc
import pytest
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = os.environ


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """pgsnapman_pb2 / _grpc generated now from the repository's proto."""
    out = tmp_path_factory.mktemp("generated")
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    code = protoc.main([
        "protoc", f"-I{ROOT / 'proto'}", f"-I{include}",
        f"--python_out={out}", f"--grpc_python_out={out}",
        "pgsnapman/v1/pgsnapman.proto",
    ])
    assert code == 0, "protoc failed"
    sys.path.insert(0, str(out))
    from pgsnapman.v1 import pgsnapman_pb2, pgsnapman_pb2_grpc
    return pgsnapman_pb2, pgsnapman_pb2_grpc


@pytest.fixture(scope="session")
def api(pb):
    pb2, pb2_grpc = pb
    with open(ENV["PGSNAPMAN_API_CA"], "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    calls = grpc.access_token_call_credentials(ENV["PGSNAPMAN_API_TOKEN"])
    channel = grpc.secure_channel(
        ENV["PGSNAPMAN_API_TARGET"], grpc.composite_channel_credentials(creds, calls))
    return pb2, pb2_grpc.AdminServiceStub(channel)


@pytest.fixture(scope="session")
def worker(api, tmp_path_factory):
    """Registers `py-worker`, enrolls it with a one-time token, runs it."""
    pb2, admin = api
    admin.RegisterWorker(pb2.RegisterWorkerRequest(name="py-worker"))
    enrollment = admin.IssueEnrollmentToken(pb2.WorkerRef(name="py-worker"))
    data = tmp_path_factory.mktemp("worker")
    env = dict(ENV,
               PGSNAPMAN_WORKER__NAME="py-worker",
               PGSNAPMAN_WORKER__DATA_DIR=str(data),
               PGSNAPMAN_COORDINATOR__URL="https://" + ENV["PGSNAPMAN_API_TARGET"],
               PGSNAPMAN_COORDINATOR__CA_FILE=ENV["PGSNAPMAN_API_CA"],
               PGSNAPMAN_COORDINATOR__ENROLL_TOKEN=enrollment.token,
               PGSNAPMAN_RETENTION__ENABLED="false")
    with open(data / "worker.log", "wb") as log:
        proc = subprocess.Popen([ENV["PGSNAPMAN_API_WORKER_BIN"]], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not admin.GetWorker(pb2.WorkerRef(name="py-worker")).connected:
                assert proc.poll() is None, "the worker exited"
                assert time.monotonic() < deadline, "the worker did not connect"
                time.sleep(0.2)
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def follow(pb2, admin, task):
    """The task's states from the WatchTask server stream, to the end."""
    states = [pb2.TaskState.Name(t.state) for t in admin.WatchTask(pb2.IdRequest(id=task.id))]
    return states, admin.GetTask(pb2.IdRequest(id=task.id))


def test_dump_and_restore_through_the_api(api, worker):
    pb2, admin = api
    instance = admin.AddInstance(pb2.AddInstanceRequest(
        name="py-source", host="127.0.0.1", port=int(ENV["PGSNAPMAN_API_SOURCE_PORT"]),
        user="postgres", default_worker=pb2.WorkerRef(name="py-worker")))
    job = admin.AddDumpJob(pb2.AddDumpJobRequest(
        instance_id=instance.id, database="py db", cron="0 3 1 1 *"))
    assert pb2.DumpFormat.Name(job.format) == "DUMP_FORMAT_CUSTOM"

    states, task = follow(pb2, admin, admin.DumpNow(pb2.DumpNowRequest(job_id=job.id)))
    assert states[-1] == "TASK_STATE_SUCCEEDED", (states, task.error)
    dumps = admin.ListDumps(pb2.ListDumpsRequest(job_id=job.id)).dumps
    assert [d.id for d in dumps] == [task.dump_id]
    dump = admin.GetDump(pb2.IdRequest(id=task.dump_id))
    assert pb2.DumpStatus.Name(dump.status) == "DUMP_STATUS_SUCCEEDED"
    assert {(t.table, t.rows) for t in dump.table_rows} == {("items", 42)}

    target = pb2.RestoreTarget(instance_id=instance.id, database="py restored")
    restore = admin.RestoreNow(pb2.RestoreNowRequest(
        dump=pb2.AdHocRestore(dump_id=dump.id, target=target)))
    states, task = follow(pb2, admin, restore)
    assert states[-1] == "TASK_STATE_SUCCEEDED", (states, task.error)
    runs = admin.ListRestoreRuns(pb2.ListRestoreRunsRequest()).runs
    assert [r.target.database for r in runs] == ["py restored"]


def test_errors_are_status_codes_with_one_line(api):
    pb2, admin = api
    with pytest.raises(grpc.RpcError) as e:
        admin.GetDump(pb2.IdRequest(id=987654321))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "987654321" in e.value.details() and "\n" not in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        admin.AddDumpJob(pb2.AddDumpJobRequest(instance_id=1, database="x", cron="61 * * * *"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()


def test_a_token_is_required(pb):
    pb2, pb2_grpc = pb
    with open(ENV["PGSNAPMAN_API_CA"], "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    admin = pb2_grpc.AdminServiceStub(grpc.secure_channel(ENV["PGSNAPMAN_API_TARGET"], creds))
    with pytest.raises(grpc.RpcError) as e:
        admin.ListWorkers(pb2.ListWorkersRequest())
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
