"""Messages between the controller and a worker process.

Each pipe message is one pickled list of commands, so that several tasks travel per
message and results and progress are coalesced.

Controller -> worker:
    (RUN, header, payload, task_type, executor_ref)   run a task (see Task._header)
    (EXECUTOR, digest, payload)                        a cloudpickled executor, sent once
    (CANCEL, uid)                                      stop a running task at its next
                                                       cancellation point
    (STOP,)                                            exit after the current message

Worker -> controller:
    (STARTED, uid, epoch_seconds)
    (PROGRESS, uid, percent)
    (DONE, uid, result_bytes, errors)
    (FAILED, uid, error_record, exception_bytes_or_None, errors)
    (FATAL, traceback_text)                            the worker is about to die
"""

RUN = "run"
EXECUTOR = "executor"
CANCEL = "cancel"
STOP = "stop"

STARTED = "started"
PROGRESS = "progress"
DONE = "done"
FAILED = "failed"
FATAL = "fatal"
