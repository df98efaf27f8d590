"""Entry point of the python3.11 runtime: `python3.11 -u -S /var/runtime/python/bootstrap.py`.

`-S` keeps the host's dist-packages out of the function's `sys.path`; `-u` makes prints land
immediately. The loop itself lives in a module so that its bytecode is cached."""

from lambdahost_runtime import main

main()
