# The pod the Ansible benchmarks deploy, and their playbooks: sourced by
# bench/ansible/run (one host, local connection) and bench/fleet/run (a
# fleet, over SSH), so both measure the same end state the same two ways.
#
#   source bench/lib/pod.sh
#   bench_pod_bundle BUNDLE SRC     make the bundle in BUNDLE (pod.json, the
#                                   unit, the volume's archive) and in SRC
#                                   the tree the volume must hold
#   bench_tree_digest DIR           one digest of DIR's files (names and bytes)
#   bench_play_head HOSTS           a play's first lines (gather_facts: false)
#   bench_pod_playbooks DIR HOSTS BUNDLE
#                                   write DIR/empty.yml, ops.yml, ops-up0.yml,
#                                   ops-clean.yml and builtin.yml for the
#                                   play's `hosts: HOSTS`, the bundle at
#                                   BUNDLE (a path on the target)
#
# The end state: pod "bench" version 1 with a templated unit web@.service
# (a long-running service that cds into its volume and sleeps), 2
# instances, a volume extracted from a .tar.gz, a drop-in per instance with
# Environment= POD_NAME, POD_VERSION and OPS_VOLUME_DATA (the volume's
# path), both instances started and started at boot. The builtin way's
# paths on the target:
bench_b_root=/var/lib/pods/bench/1          # the builtin way's pod directory
bench_b_vol=$bench_b_root/volumes/data      # ... and its volume
bench_units=/etc/systemd/system

# The bundle: pod.json, the unit, the volume's archive (500 files of text in
# 20 directories, 2.2 MB, made here so both ways extract the same bytes).
bench_pod_bundle() {
  local bundle=$1 src=$2 d f
  mkdir -p "$bundle" "$src"
  for d in $(seq -w 0 19); do
    mkdir -p "$src/dir$d"
    for f in $(seq -w 0 24); do
      seq "$((10#$d * 1000 + 10#$f))" 1 "$((10#$d * 1000 + 10#$f + 800))" > "$src/dir$d/file$f.txt"
    done
  done
  tar -C "$src" -czf "$bundle/data.tar.gz" .
  cat > "$bundle/web@.service" <<'EOF'
[Unit]
Description=bench web instance %i

[Service]
# A stand-in for a server of its volume's files: runs in the volume until stopped.
ExecStart=/bin/sh -c 'cd "$OPS_VOLUME_DATA" && exec sleep infinity'

[Install]
WantedBy=multi-user.target
EOF
  cat > "$bundle/pod.json" <<'EOF'
{
  "name": "bench",
  "version": "1",
  "containers": [
    {"name": "web", "replication": 2, "systemd": {"unit-files": ["web@.service"]}}
  ],
  "volumes": [
    {"name": "data", "path": "/srv/data", "data": "data.tar.gz"}
  ]
}
EOF
}

bench_tree_digest() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1); }

bench_play_head() {
  cat <<EOF
- hosts: $1
  gather_facts: false
EOF
}

bench_pod_playbooks() {
  local dir=$1 hosts=$2 bundle=$3 units=$bench_units
  { bench_play_head "$hosts"; echo "  tasks: []"; } > "$dir/empty.yml"
  { bench_play_head "$hosts"; cat <<EOF
  tasks:
    - name: Deploy pod bench 1
      ops.onboard.ops_pod:
        bundle: $bundle
EOF
  } > "$dir/ops.yml"
  # The same task taking systemd's word that the units are up, as the
  # builtin way's systemd_service does, instead of watching them for 1 s.
  { bench_play_head "$hosts"; cat <<EOF
  tasks:
    - name: Deploy pod bench 1
      ops.onboard.ops_pod:
        bundle: $bundle
        min_up_time: 0
EOF
  } > "$dir/ops-up0.yml"
  { bench_play_head "$hosts"; cat <<'EOF'
  tasks:
    - name: Remove every version of pod bench
      ops.onboard.ops_pod: {name: bench, state: absent}
EOF
  } > "$dir/ops-clean.yml"
  { bench_play_head "$hosts"; cat <<EOF
  vars:
    bundle: $bundle
    pod_dir: $bench_b_root
    volume: $bench_b_vol
    instances: ["1", "2"]
  tasks:
    - name: Directories of the pod, its volume and each instance's drop-ins
      ansible.builtin.file:
        path: "{{ item }}"
        state: directory
        mode: "0755"
      loop:
        - "{{ pod_dir }}"
        - "{{ volume }}"
        - $units/web@1.service.d
        - $units/web@2.service.d

    - name: Extract the volume
      ansible.builtin.unarchive:
        src: "{{ bundle }}/data.tar.gz"
        dest: "{{ volume }}"
        remote_src: true

    - name: Copy pod.json
      ansible.builtin.copy:
        src: "{{ bundle }}/pod.json"
        dest: "{{ pod_dir }}/pod.json"
        remote_src: true
        mode: "0644"

    - name: Install the unit
      ansible.builtin.copy:
        src: "{{ bundle }}/web@.service"
        dest: $units/web@.service
        remote_src: true
        mode: "0644"

    - name: A drop-in per instance
      ansible.builtin.copy:
        dest: "$units/web@{{ item }}.service.d/50-pod.conf"
        content: |
          [Service]
          Environment=POD_NAME=bench POD_VERSION=1 OPS_VOLUME_DATA={{ volume }}
        mode: "0644"
      loop: "{{ instances }}"

    - name: Start and enable each instance
      ansible.builtin.systemd_service:
        name: "web@{{ item }}.service"
        daemon_reload: true
        state: started
        enabled: true
      loop: "{{ instances }}"
EOF
  } > "$dir/builtin.yml"
}
