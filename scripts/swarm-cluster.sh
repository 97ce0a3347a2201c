#!/bin/bash
# A throwaway Docker Swarm of N nodes on ONE machine, for rollover's Swarm tests.
#
#   scripts/swarm-cluster.sh up [N]               N nodes (default 3), returns once every node is Ready
#   scripts/swarm-cluster.sh down                 tears down whatever exists (also half-made clusters)
#   scripts/swarm-cluster.sh load [--from HOST] IMAGE...  copy images from a daemon into every node
#   scripts/swarm-cluster.sh load --file TAR      load a `docker save` tarball into every node
#   scripts/swarm-cluster.sh hosts                one "hostname docker-host" line per node
#   scripts/swarm-cluster.sh restart [N]          stop node N's dockerd (TERM) and start it again
#
# Each node is its own dockerd (Debian docker.io 20.10) in its own network + UTS namespace, so the
# main daemon at /var/run/docker.sock is never touched and never put into swarm mode.
# Nodes rsw-n1..N get $NET.11..; node 1 is the (only) manager. Names are prefixed with $RSW (default
# "rsw") so this never collides with the hand recipe's st-* namespaces.
#
# Layout: a "switch" namespace rsw-sw holds a bridge; every node has a veth into it, and the host gets
# one leg (rsw-h0, $NET.1) so tests can reach host-mode published ports on the nodes. The bridge lives in
# its own namespace on purpose: on the host, docker sets bridge-nf-call-iptables=1 and FORWARD DROP,
# which would silently drop node-to-node traffic crossing a host bridge.
set -euo pipefail

RSW=${RSW:-rsw}
NET=${RSW_NET:-10.213.0}
SW=$RSW-sw
HOSTLEG=$RSW-h0

node_ns() { echo "$RSW-n$1"; }
node_host() { echo "unix:///run/$(node_ns "$1")/docker.sock"; }
node_docker() { local i=$1; shift; docker -H "$(node_host "$i")" "$@"; }

# Node numbers that exist right now (namespaces or leftover run dirs), so `down` needs no N.
existing_nodes() {
  { ip netns list 2>/dev/null | awk '{print $1}'; ls -1 /run 2>/dev/null; } |
    sed -n "s/^$RSW-n\([0-9][0-9]*\)\$/\1/p" | sort -un
}

start_node_daemon() {
  local i=$1 ns; ns=$(node_ns "$i")
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$SW" link add "p$i" type veth peer name eth0 netns "$ns"
  ip -n "$SW" link set "p$i" master br0 up
  ip -n "$ns" addr add "$NET.$((10 + i))/24" dev eth0
  ip -n "$ns" link set eth0 up
  mkdir -p "/var/lib/$ns" "/run/$ns" "/etc/netns/$ns"
  # DNS gotcha: the swarm agent tries to pull the image before EVERY task start, even when it is
  # present. With no resolver it would hang on DNS timeouts; 127.0.0.1 refuses at once, so the pull
  # fails fast and the local image is used. `ip netns exec` bind-mounts this file over /etc/resolv.conf.
  echo "nameserver 127.0.0.1" >"/etc/netns/$ns/resolv.conf"
  exec_node_daemon "$i"
}

exec_node_daemon() {
  local i=$1 ns; ns=$(node_ns "$i")
  # cgroup gotcha: `ip netns exec` remounts /sys for the namespace, which hides the host's cgroup v1
  # mounts (and a bind from /proc/1/root fails). dockerd then cannot create containers, so we mount the
  # same v1 hierarchies again (this machine: cgroup v1, cgroupfs driver) before exec'ing dockerd.
  # --cgroup-parent keeps each node's containers in their own subtree, apart from the main daemon's.
  # `unshare --uts` gives the node its own hostname, which becomes its swarm node name.
  ip netns exec "$ns" unshare --uts setsid sh -c "hostname $ns &&
     mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup &&
     for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
       mkdir -p /sys/fs/cgroup/\$c && mount -t cgroup -o \$c cgroup /sys/fs/cgroup/\$c; done &&
     mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd &&
     exec dockerd --data-root /var/lib/$ns --exec-root /run/$ns/exec --pidfile /run/$ns/docker.pid \
       -H $(node_host "$i") --bip 172.30.$i.1/24 --cgroup-parent /$ns" \
    >"/run/$ns/dockerd.log" 2>&1 </dev/null &
}

wait_for_daemon() {
  local i=$1 t
  for t in $(seq 1 150); do
    node_docker "$i" info >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "node $(node_ns "$i"): dockerd did not answer; log:" >&2
  tail -20 "/run/$(node_ns "$i")/dockerd.log" >&2
  return 1
}

wait_until_all_ready() {
  local n=$1 t ready
  for t in $(seq 1 150); do
    ready=$(node_docker 1 node ls --format '{{.Status}}' 2>/dev/null | grep -c '^Ready$' || true)
    [ "$ready" -eq "$n" ] && return 0
    sleep 0.2
  done
  echo "only $ready of $n nodes became Ready" >&2
  node_docker 1 node ls >&2 || true
  return 1
}

cmd_up() {
  local n=${1:-3} i token
  [[ "$n" =~ ^[1-9][0-9]?$ ]] || { echo "up: N must be a node count from 1 to 99" >&2; return 2; }
  if ip route show "$NET.0/24" 2>/dev/null | grep -qv "dev $HOSTLEG"; then
    echo "$NET.0/24 is already routed by someone else; set RSW_NET to a free /24" >&2
    return 1
  fi
  cmd_down  # a clean start also clears what an interrupted run left behind
  ip netns add "$SW"
  ip -n "$SW" link set lo up
  ip -n "$SW" link add br0 type bridge
  ip -n "$SW" link set br0 up
  ip link add "$HOSTLEG" type veth peer name h0 netns "$SW"
  ip -n "$SW" link set h0 master br0 up
  ip addr add "$NET.1/24" dev "$HOSTLEG"
  ip link set "$HOSTLEG" up
  for i in $(seq 1 "$n"); do start_node_daemon "$i"; done
  for i in $(seq 1 "$n"); do wait_for_daemon "$i"; done
  node_docker 1 swarm init --advertise-addr "$NET.11" --listen-addr "$NET.11:2377" >/dev/null
  token=$(node_docker 1 swarm join-token -q worker)
  local joins=()
  for i in $(seq 2 "$n"); do
    node_docker "$i" swarm join --token "$token" --advertise-addr "$NET.$((10 + i))" "$NET.11:2377" \
      >/dev/null &
    joins+=($!)
  done
  # Wait for the joins only: a bare `wait` would also wait for the dockerd children, forever.
  for i in "${joins[@]}"; do wait "$i"; done
  wait_until_all_ready "$n"
  cmd_hosts
}

# No `swarm leave`: the whole swarm goes, state and all. TERM every daemon at once (each takes ~3 s to
# shut down), then clear what is left of each node.
stop_daemon() {
  local pidfile="/run/$(node_ns "$1")/docker.pid"
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
}

remove_node() {
  local i=$1 ns pid t
  ns=$(node_ns "$i")
  if [ -f "/run/$ns/docker.pid" ]; then
    pid=$(cat "/run/$ns/docker.pid")
    for t in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  # Whatever still lives in the namespace (a shim, a container process) was started by this script.
  if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  fi
  # A node whose dockerd was SIGKILLed leaves its containers running, each in network namespaces of
  # its own (so not among the node's pids above) but in the node's cgroup (--cgroup-parent).
  kill_cgroup_processes "$ns"
  rm -rf "/var/lib/$ns" "/run/$ns" "/etc/netns/$ns"
}

kill_cgroup_processes() {
  local root="/sys/fs/cgroup/pids/$1" pid t
  [ -d "$root" ] || return 0
  for pid in $(find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  for t in $(seq 1 50); do
    [ -z "$(find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && break
    sleep 0.1
  done
  find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
}

# The node's dockerd stopped (TERM, as a service manager restarts it) and started again in its
# namespace, swarm state and all: what a daemon restart mid-rollout looks like.
cmd_restart() {
  local i=${1:-1} pid t
  [ -f "/run/$(node_ns "$i")/docker.pid" ] || { echo "restart: node $i is not running" >&2; return 1; }
  pid=$(cat "/run/$(node_ns "$i")/docker.pid")
  kill "$pid"
  for t in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$pid" 2>/dev/null || { echo "restart: dockerd of node $i did not stop in 30 s" >&2; return 1; }
  exec_node_daemon "$i"
  wait_for_daemon "$i"
}

cmd_down() {
  local i
  for i in $(existing_nodes); do stop_daemon "$i"; done
  for i in $(existing_nodes); do remove_node "$i"; done
  ip netns del "$SW" 2>/dev/null || true  # takes br0 and the veths with it
  ip link del "$HOSTLEG" 2>/dev/null || true
}

cmd_hosts() {
  local i
  for i in $(existing_nodes); do echo "$(node_ns "$i") $(node_host "$i")"; done
}

# No registry here, and Swarm nodes only use their own local images: copy them into every node,
# from a daemon that has them (default node 1, skipped as a target) or from a `docker save` tarball.
cmd_load() {
  local from="" file="" i
  case "${1:-}" in
    --from) from=$2; shift 2 ;;
    --file) file=$2; shift 2 ;;
  esac
  [ -n "$from$file" ] || from=$(node_host 1)
  for i in $(existing_nodes); do
    if [ -n "$file" ]; then
      node_docker "$i" load -q -i "$file" >/dev/null
    elif [ "$(node_host "$i")" != "$from" ]; then
      docker -H "$from" save "$@" | node_docker "$i" load -q >/dev/null
    fi
  done
}

case "${1:-}" in
  # A failed `up` takes down what it made, so nothing half-made outlives it.
  up) shift; trap 'rc=$?; [ "$rc" -eq 0 ] || cmd_down; exit "$rc"' EXIT; cmd_up "$@" ;;
  down) cmd_down ;;
  load) shift; cmd_load "$@" ;;
  hosts) cmd_hosts ;;
  restart) shift; cmd_restart "$@" ;;
  *) echo "usage: $0 up [N] | down | restart [N] | load [--from HOST] IMAGE... | load --file TAR | hosts" >&2
     exit 2 ;;
esac
