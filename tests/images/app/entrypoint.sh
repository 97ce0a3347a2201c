#!/bin/sh
# busybox sh as PID 1 ignores SIGTERM unless it traps it: without this every stop would wait the
# full stop timeout. Forward TERM to httpd and exit as soon as it is gone.
httpd -f -p 8080 -h /www &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"; exit 0' TERM INT
wait "$server"
