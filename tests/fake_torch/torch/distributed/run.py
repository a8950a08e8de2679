"""torch.distributed.run (torchrun), stand-in: its static rendezvous, its options from PET_* alone.

torchrun reads each of its options from ``PET_<OPTION>`` when the flag is not given (torch's
argparse_util ``env`` action): ``fab launch --torchrun`` gives them so, never as flags, so that no
rank is in a command line. This stand-in takes no flag at all (one would fail it, as a test wants),
starts ``PET_NPROC_PER_NODE`` workers of ``python SCRIPT ARGS`` with the environment torchrun gives
its workers, and exits with the first non-zero exit of a worker (a TERM stops them all).
"""

import os
import signal
import subprocess
import sys


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(f"fake torchrun: takes no option, only SCRIPT ARGS (got {args[:1]})")
    nnodes, node_rank = int(os.environ["PET_NNODES"]), int(os.environ["PET_NODE_RANK"])
    nproc = int(os.environ["PET_NPROC_PER_NODE"])
    workers = []
    for local in range(nproc):
        env = dict(os.environ, RANK=str(node_rank * nproc + local), LOCAL_RANK=str(local),
                   WORLD_SIZE=str(nnodes * nproc), LOCAL_WORLD_SIZE=str(nproc), GROUP_RANK=str(node_rank),
                   MASTER_ADDR=os.environ["PET_MASTER_ADDR"], MASTER_PORT=os.environ["PET_MASTER_PORT"])
        workers.append(subprocess.Popen([sys.executable, *args], env=env))
    signal.signal(signal.SIGTERM, lambda *_: [w.terminate() for w in workers])
    codes = [w.wait() for w in workers]
    sys.exit(next((code for code in codes if code), 0))


if __name__ == "__main__":
    main()
