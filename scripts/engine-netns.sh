#!/bin/bash
# An extra Docker Engine of its own, for tests that restart a daemon mid-rollout: the main daemon at
# /var/run/docker.sock is shared with other suites and is never stopped, restarted or reconfigured.
#
#   scripts/engine-netns.sh up NAME        network namespace NAME + dockerd (data-root /var/lib/NAME,
#                                          exec-root /run/NAME/exec, socket unix:///run/NAME/docker.sock);
#                                          returns once the daemon answers
#   scripts/engine-netns.sh restart NAME   SIGTERM its dockerd, wait until it has exited, start it again
#                                          with the same flags, return once it answers
#   scripts/engine-netns.sh down NAME      stop it and remove everything `up` made (half-made ones too)
#   scripts/engine-netns.sh host NAME      print its DOCKER_HOST
#
# ENGINE_NETNS_DOCKERD_ARGS (read by `up`, e.g. "--live-restore"): extra dockerd flags; they are kept in
# /run/NAME/dockerd.args so that `restart` starts the daemon again with exactly the same flags.
#
# NAME must match rtest-[a-z0-9-]+ : it names the directories `down` removes. Images are not pulled
# (there is no registry): copy them in with `docker save IMAGE... | docker -H HOST load`.
#
# Gotchas, as in ../shared/recipes/swarm-netns-up.sh:
# - cgroups: `ip netns exec` remounts /sys for the namespace, hiding the host's cgroup v1 mounts, and
#   dockerd cannot create a container without them; the same v1 hierarchies are mounted again (this
#   machine: cgroup v1, cgroupfs driver) before exec'ing dockerd. --cgroup-parent keeps this daemon's
#   containers in a subtree of their own, apart from the main daemon's.
# - DNS: the namespace gets "nameserver 127.0.0.1" (`ip netns exec` bind-mounts /etc/netns/NAME/
#   resolv.conf), so an accidental pull fails at once instead of waiting on DNS timeouts.
# - The namespace has only its loopback: nothing inside can reach the host or beyond. Containers get
#   the daemon's own bridge inside the namespace, so its addresses cannot collide with the host's.
# - The daemon reads an empty config file of its own, never the host's /etc/docker/daemon.json.
# - `down` kills whatever is left in the daemon's cgroup subtree (/NAME): with --live-restore the
#   containers outlive their daemon, and they are in network namespaces of their own.
# - PID 1 here may not reap orphans: a dockerd that exited can linger as a zombie, which `kill -0`
#   still finds, so "alive" means a process that is not a zombie.
set -euo pipefail

usage() { echo "usage: $0 up|down|restart|host NAME" >&2; exit 2; }

[ $# -eq 2 ] || usage
cmd=$1 name=$2
[[ "$name" =~ ^rtest-[a-z0-9-]+$ ]] && [ ${#name} -le 40 ] || {
  echo "NAME must match rtest-[a-z0-9-]+ (at most 40 characters): $name" >&2; exit 2; }

[[ "${ENGINE_NETNS_DOCKERD_ARGS:-}" =~ ^[-a-zA-Z0-9=/.,:_\ ]*$ ]] || {
  echo "ENGINE_NETNS_DOCKERD_ARGS: flags only (letters, digits, - = / . , : _ and spaces)" >&2; exit 2; }

run_dir=/run/$name
data_root=/var/lib/$name
pidfile=$run_dir/docker.pid
sock=unix://$run_dir/docker.sock
log=$run_dir/dockerd.log

has_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$name"; }

alive() {  # alive PID: a running (non-zombie) process
  local state
  state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

daemon_pid() { [ -s "$pidfile" ] && cat "$pidfile"; }

answers() { docker -H "$sock" info >/dev/null 2>&1; }

start_daemon() {
  ip netns exec "$name" setsid sh -c "
     mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup &&
     for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
       mkdir -p /sys/fs/cgroup/\$c && mount -t cgroup -o \$c cgroup /sys/fs/cgroup/\$c; done &&
     mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd &&
     exec dockerd --config-file $run_dir/daemon.json --data-root $data_root --exec-root $run_dir/exec \
       --pidfile $pidfile -H $sock --cgroup-parent /$name $(cat "$run_dir/dockerd.args")" \
    >>"$log" 2>&1 </dev/null &
}

wait_until_answers() {
  local t
  for t in $(seq 1 300); do  # 60 s
    answers && return 0
    sleep 0.2
  done
  echo "dockerd $name did not answer at $sock within 60 s; its log:" >&2
  tail -30 "$log" >&2 || true
  return 1
}

# Bounded: dockerd stops its containers on the way out (their own stop timeouts) and then containerd.
stop_daemon() {
  local pid t
  pid=$(daemon_pid) || return 0
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for t in $(seq 1 300); do  # 60 s
    alive "$pid" || return 0
    sleep 0.2
  done
  echo "dockerd $name (pid $pid) did not exit within 60 s of SIGTERM" >&2
  return 1
}

cmd_up() {
  if has_netns || [ -e "$run_dir" ] || [ -e "$data_root" ]; then
    echo "$name exists already (run: $0 down $name)" >&2
    return 1
  fi
  ip netns add "$name"
  ip -n "$name" link set lo up
  mkdir -p "$run_dir" "$data_root" "/etc/netns/$name"
  echo '{}' >"$run_dir/daemon.json"
  printf '%s\n' "${ENGINE_NETNS_DOCKERD_ARGS:-}" >"$run_dir/dockerd.args"
  echo "nameserver 127.0.0.1" >"/etc/netns/$name/resolv.conf"
  start_daemon
  wait_until_answers
}

cmd_restart() {
  local old
  old=$(daemon_pid) || { echo "$name: no dockerd pid file at $pidfile" >&2; return 1; }
  stop_daemon
  # dockerd removes its pid file on a clean exit; a stale one would make the new daemon refuse to start.
  if [ -e "$pidfile" ] && [ "$(cat "$pidfile")" = "$old" ]; then rm -f "$pidfile"; fi
  start_daemon
  wait_until_answers
}

cmd_down() {
  local pid
  stop_daemon || true
  kill_cgroup_members
  if has_netns; then
    # Whatever still lives in the namespace (a shim, a container's process) was started by this daemon.
    for pid in $(ip netns pids "$name" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$name" 2>/dev/null || true
  fi
  # The daemon's mounts lived in its own mount namespace (gone with it): these are plain directories here.
  rm -rf "$data_root" "$run_dir" "/etc/netns/$name"
  remove_cgroups
}

# Containers live in network namespaces of their own, out of reach of `ip netns pids`; a --live-restore
# daemon leaves them running when it stops. All of them are in the cgroup subtree /NAME, though.
kill_cgroup_members() {
  local t pids
  for t in $(seq 1 50); do  # 5 s
    pids=$(find /sys/fs/cgroup/*/"$name" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086  # one pid per word
    kill -9 $pids 2>/dev/null || true
    sleep 0.1
  done
  echo "processes still in cgroup /$name: $pids" >&2
}

# --cgroup-parent /NAME made a cgroup per hierarchy (and one per container below it) in the host's tree;
# empty now, they go deepest first (rmdir is how a cgroup is removed).
remove_cgroups() {
  local dir
  for dir in /sys/fs/cgroup/*/"$name"; do
    [ -d "$dir" ] || continue
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

case "$cmd" in
  up) trap 'rc=$?; [ "$rc" -eq 0 ] || cmd_down; exit "$rc"' EXIT; cmd_up ;;  # nothing half-made outlives a failed up
  restart) cmd_restart ;;
  down) cmd_down ;;
  host) echo "$sock" ;;
  *) usage ;;
esac
