"""Several processes, one run: the process group (`context`), the engines around what trains (`engine`) and the
schedulers a sweep's jobs are handed to (`launch`)."""
