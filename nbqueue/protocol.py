"""Messages between the controller and a worker process.

Each pipe message is one pickled list of commands, so that several tasks travel per
message and results and progress are coalesced.

Controller -> worker:
    (RUN, header, payload, task_type, executor_ref)   run a task (see Task.header)
    (EXECUTOR, digest, payload)                        a cloudpickled executor, sent once
    (SHARED, digest)                                   a queue.put() object, sent once: its
                                                       pickle follows as a message of its
                                                       own (not pickled again)
    (CANCEL, uid)                                      stop a running task at its next
                                                       cancellation point
    (STOP,)                                            exit after the current message

Worker -> controller:
    (READY,)                                           the worker is up (its first message)
    (STARTED, uid, epoch_seconds)
    (PROGRESS, uid, percent)
    (OUTPUT, uid, text)                                what the task wrote (stdout, stderr,
                                                       log records) since the last OUTPUT
    (DONE, uid, result_bytes, errors)
    (FAILED, uid, error_record, exception_bytes_or_None, errors)
    (FATAL, traceback_text)                            the worker is about to die

Besides the pipe, each worker shares with the controller a table of ``tasks_per_worker``
integers: the number of the task each of its places runs (the nth RUN a worker received is
number n), 0 for none. It tells which tasks were running when a worker died.
"""

RUN = "run"
EXECUTOR = "executor"
SHARED = "shared"
CANCEL = "cancel"
STOP = "stop"

READY = "ready"
STARTED = "started"
PROGRESS = "progress"
OUTPUT = "output"
DONE = "done"
FAILED = "failed"
FATAL = "fatal"
