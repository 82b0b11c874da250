"""A stand-in trainer for platform benchmarks: speaks the trainer event protocol (schema/
trainer-events.schema.json) as fast as asked, without training anything, so a benchmark measures
the platform (gpu-node, Redis, ingester, PostgreSQL, pub/sub, websockets) and not PyTorch.

    python -m cvtrain train --config run.json --events fd:3

STANDIN_EPOCH_INTERVAL_MS  pause between epoch events (default 50)
Each epoch event's metrics carry sent_at_ms, the wall-clock time it was written, for latency.
"""
import hashlib
import json
import os
import signal
import sys
import time


def now_iso():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def main():
    args = sys.argv[1:]
    if not args or args[0] != "train":
        print("stand-in trainer: only `train` is supported", file=sys.stderr)
        return 2
    config = json.load(open(args[args.index("--config") + 1]))
    target = args[args.index("--events") + 1]
    out = os.fdopen(int(target[3:]), "w", buffering=1) if target.startswith("fd:") else open(target, "a", buffering=1)
    session = config.get("session_id", "local")
    epochs = int(config.get("epochs", 10))
    interval = float(os.environ.get("STANDIN_EPOCH_INTERVAL_MS", "50")) / 1000.0
    output_dir = config["output_dir"]
    os.makedirs(os.path.join(output_dir, "checkpoints"), exist_ok=True)
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))

    def emit(event_type, **fields):
        # Not `kind`: checkpoint events carry a field of that name.
        out.write(json.dumps({"v": 1, "type": event_type, "ts": now_iso(), "session": session, **fields}) + "\n")
        out.flush()

    start_epoch = 0
    resume = config.get("resume_from")
    if resume and os.path.exists(resume):
        start_epoch = int(open(resume).read().split()[0])
    emit("started", total_epochs=epochs, start_epoch=start_epoch, start_step=0, device="cpu", torch_version="stand-in",
         resumed_from=resume if start_epoch else None, train_images=1, val_images=1, pid=os.getpid(),
         task=config.get("task", "classification"), framework="torchvision", architecture=config.get("architecture", "x"),
         class_names=["a", "b"], image_size=32, batch_size=1, steps_per_epoch=1, amp="off", num_workers=0)

    def checkpoint(epoch, kind):
        path = os.path.join(output_dir, "checkpoints", "last.pt")
        data = ("%d stand-in checkpoint\n" % epoch).encode()
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
        emit("checkpoint", epoch=epoch, step=0, path=path, kind=kind, size_bytes=len(data),
             sha256=hashlib.sha256(data).hexdigest())
        return path

    for epoch in range(start_epoch + 1, epochs + 1):
        time.sleep(interval)
        if stop["requested"]:
            path = checkpoint(epoch - 1, "stop")
            emit("stopped", reason="signal:SIGTERM", epoch=epoch - 1, step=0, checkpoint=path, resumable=True)
            return 0
        emit("epoch", epoch=epoch, total_epochs=epochs, train_loss=1.0 / epoch, losses={"loss": 1.0 / epoch},
             metrics={"mAP": epoch / epochs, "sent_at_ms": time.time() * 1000.0}, lr=0.01, seconds=interval,
             images_per_sec=1.0, is_best=True)
        if os.environ.get("STANDIN_CHECKPOINTS") == "1":
            checkpoint(epoch, "last")
    emit("completed", epochs=epochs, best_epoch=epochs, best_metric_name="mAP", best_metric=1.0,
         metrics={"mAP": 1.0}, early_stopped=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
