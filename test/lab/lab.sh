#!/usr/bin/env bash
# NovaCron's hypervisor lab: real libvirtd + QEMU nodes on one machine, for tests.
# No KVM is needed: guests run under TCG software emulation. Root is needed.
#
#   lab.sh install          install libvirtd, QEMU and busybox (Debian packages)
#   lab.sh guest            build the tiny test guest (kernel + busybox initramfs + disk)
#   lab.sh start NODE [IP]  start NODE's own libvirtd; prints its libvirt URI. With IP,
#                           the node gets its own network namespace with that address
#                           (/24) on the lab bridge, and its libvirtd listens there on
#                           TLS (qemu+tls://IP/system, certificates from the lab CA)
#                           and on TCP (qemu+tcp://IP/system), so nodes can migrate
#                           VMs to each other; QEMU has migration TLS certificates
#   lab.sh uri NODE         print NODE's libvirt URI (its unix socket)
#   lab.sh pki              make the lab CA and a client certificate (once); prints the
#                           folder holding cacert.pem, clientcert.pem and clientkey.pem,
#                           the keys of the Secret novacron-libvirt-client-tls
#   lab.sh stop NODE        stop NODE's guests and daemons
#   lab.sh stop-all         stop every lab node
#
# Each node is a libvirtd in its own mount namespace with its own /etc/libvirt,
# /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and /run, so nodes do not
# share state (libvirt refuses to migrate to "the same host"). The guest boots in
# about 3 s, prints NOVACRON-GUEST-BOOT <boot id> then NOVACRON-TICK <uptime> every
# 2 s on its serial console, and powers off when it gets an ACPI power-button press.
# The facts behind these choices are measured in the team's HYPERVISOR-LAB notes.
set -euo pipefail

LAB_DIR=${NOVACRON_LAB_DIR:-/var/tmp/novacron-lab}
GUEST_DIR=$LAB_DIR/guest
PACKAGES=(libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils busybox-static cpio iproute2 openssl
  libvirt-daemon-config-nwfilter ebtables iptables)
# Bumped when the guest changes, so a cached one is built again.
GUEST_VERSION=2

log() { echo "lab: $*" >&2; }
die() { echo "lab: $*" >&2; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "the hypervisor lab needs root (it starts libvirtd and QEMU)"; }

cmd_install() {
  need_root
  local missing=()
  command -v libvirtd >/dev/null || missing+=(libvirt-daemon-system libvirt-daemon-driver-qemu)
  command -v virsh >/dev/null || missing+=(libvirt-clients)
  command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
  command -v qemu-img >/dev/null || missing+=(qemu-utils)
  [[ -x /bin/busybox ]] || missing+=(busybox-static)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v cpio >/dev/null || missing+=(cpio)
  command -v openssl >/dev/null || missing+=(openssl)
  # Bridge NICs carry libvirt's clean-traffic filter: its definition and the
  # tools it programs.
  [[ -f /etc/libvirt/nwfilter/clean-traffic.xml ]] || missing+=(libvirt-daemon-config-nwfilter)
  command -v ebtables >/dev/null || missing+=(ebtables)
  command -v iptables >/dev/null || missing+=(iptables)
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]}; install them with your package manager"
  log "installing ${missing[*]} (about 2 minutes)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2
  # The package may have started the system's own libvirtd; the lab runs its own.
  pkill -x libvirtd 2>/dev/null || true
}

cmd_guest() {
  need_root
  if [[ -s $GUEST_DIR/vmlinuz && -s $GUEST_DIR/initrd.img && -s $GUEST_DIR/disk.qcow2 && $(cat "$GUEST_DIR/version" 2>/dev/null) == "$GUEST_VERSION" ]]; then return 0; fi
  mkdir -p "$GUEST_DIR"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  # The kernel comes from Debian's cloud kernel package, unpacked rather than
  # installed (installing runs initramfs hooks for over a minute).
  local pkg
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
  [[ -n $pkg ]] || { apt-get update -qq >&2; pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}'); }
  [[ -n $pkg ]] || die "cannot find Debian's linux-image-cloud-amd64 package"
  log "building the test guest from $pkg"
  (cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
  dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
  cp "$work"/k/boot/vmlinuz-* "$GUEST_DIR/vmlinuz"

  local root=$work/initrd
  mkdir -p "$root"/{bin,dev,proc,sys,lib/modules}
  cp /bin/busybox "$root/bin/busybox"
  find "$work/k/lib/modules" \( -name button.ko -o -name evdev.ko \) -exec cp {} "$root/lib/modules/" \;
  # A virtio NIC, for the guest's network check (novacron.net= below).
  local m
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
    find "$work/k/lib/modules" -name "$m.ko" -exec cp {} "$root/lib/modules/" \;
  done
  cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
insmod /lib/modules/evdev.ko 2>/dev/null
insmod /lib/modules/button.ko 2>/dev/null
echo "NOVACRON-GUEST-BOOT $(cat /proc/sys/kernel/random/boot_id)"
# novacron.net=ADDR/LEN,PEER,SPOOF/LEN: ping PEER from the guest's own address,
# then from a spoofed one, and say what answered (the clean-traffic check).
net=$(sed -n 's/.*novacron\.net=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$net" ]; then
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
    insmod /lib/modules/$m.ko 2>/dev/null
  done
  own=${net%%,*}; rest=${net#*,}; peer=${rest%%,*}; spoof=${rest#*,}
  i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  ip link set eth0 up
  ip addr add "$own" dev eth0
  if ping -c 3 -W 2 "$peer" >/dev/null 2>&1; then echo "NOVACRON-NET-OWN-ANSWERED"; else echo "NOVACRON-NET-OWN-UNANSWERED"; fi
  ip addr flush dev eth0
  ip addr add "$spoof" dev eth0
  if ping -c 3 -W 2 "$peer" >/dev/null 2>&1; then echo "NOVACRON-NET-SPOOF-ANSWERED"; else echo "NOVACRON-NET-SPOOF-UNANSWERED"; fi
fi
# No ACPI daemon in busybox: a press of the ACPI power button powers off.
(
  i=0
  while [ $i -lt 50 ]; do
    for d in /sys/class/input/event*; do
      if grep -qs "Power Button" "$d/device/name"; then
        # evdev reads whole events (24 bytes on x86_64); a shorter read fails at once.
        dd if="/dev/input/$(basename "$d")" bs=24 count=1 >/dev/null 2>&1 || { echo "NOVACRON-GUEST-BUTTON-READ-FAILED"; break 2; }
        echo "NOVACRON-GUEST-POWEROFF"
        poweroff -f
      fi
    done
    sleep 0.1; i=$((i+1))
  done
  echo "NOVACRON-GUEST-NO-POWER-BUTTON"
) &
while true; do
  echo "NOVACRON-TICK $(cut -d' ' -f1 /proc/uptime)"
  sleep 2
done
EOF
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$GUEST_DIR/initrd.img"
  # Internal snapshots need every disk to be qcow2.
  qemu-img create -q -f qcow2 "$GUEST_DIR/disk.qcow2" 64M
  echo "$GUEST_VERSION" >"$GUEST_DIR/version"
  log "guest ready in $GUEST_DIR"
}

node_dir() { echo "$LAB_DIR/nodes/$1"; }

# The bridge behind a node's libvirt network "default" (the NIC VMs get by
# default): named per node, since every node's bridge lives in this network
# namespace, and within the 15 characters Linux allows.
node_bridge() { echo "ncb$(echo -n "$1" | md5sum | cut -c1-10)"; }

cmd_uri() { echo "qemu:///system?socket=$(node_dir "$1")/run/libvirt/libvirt-sock"; }

# The lab bridge joins the nodes' network namespaces (10.200.0.0/24). The root
# namespace has HOST_IP on it, so clients here (and containers, routed through
# here) reach the nodes' libvirtd over TLS, as an operator reaches real nodes.
LAB_BRIDGE=nclabbr0
HOST_IP=10.200.0.254
PKI_DIR=$LAB_DIR/pki

# leaf NAME CN [IP]: a key and certificate signed by the lab CA, for both TLS
# ends (libvirt checks the key usages and the server's IP address).
leaf() {
  local name=$1 cn=$2 ip=${3:-} san=""
  [[ -n $ip ]] && san="subjectAltName = IP:$ip"
  # Explicit checks: callers chain leaf with &&, which turns errexit off here.
  openssl req -newkey rsa:2048 -nodes -keyout "$name-key.pem" -subj "/O=NovaCron lab/CN=$cn" -out "$name.csr" 2>"$name.err" ||
    die "openssl req for $cn: $(cat "$name.err")"
  printf '%s\nbasicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth, clientAuth\n' "$san" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA "$PKI_DIR/cacert.pem" -CAkey "$PKI_DIR/ca-key.pem" -CAcreateserial \
    -days 365 -extfile "$name.ext" -out "$name-cert.pem" 2>"$name.err" || die "openssl x509 for $cn: $(cat "$name.err")"
  rm -f "$name.csr" "$name.ext" "$name.err"
}

cmd_pki() {
  # Made again when missing or within a day of expiry (the leaves last a year).
  if [[ ! -s $PKI_DIR/client/clientkey.pem ]] || ! openssl x509 -checkend 86400 -noout -in "$PKI_DIR/client/clientcert.pem" >/dev/null 2>&1; then
    rm -rf "$PKI_DIR"
    mkdir -p "$PKI_DIR/client"
    (
      cd "$PKI_DIR"
      openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out cacert.pem -days 3650 \
        -subj "/O=NovaCron lab/CN=NovaCron lab CA" \
        -addext "basicConstraints = critical, CA:TRUE" -addext "keyUsage = critical, keyCertSign, cRLSign" 2>/dev/null
      cd client && leaf client novacron-operator
      mv client-key.pem clientkey.pem && mv client-cert.pem clientcert.pem && cp ../cacert.pem .
    )
  fi
  echo "$PKI_DIR/client"
}

# node_pki NODE IP: NODE's /etc/pki (bound there in its mount namespace), in
# the layouts libvirtd (server and, for peer-to-peer migration, client) and
# QEMU's migration TLS expect.
node_pki() {
  local pki; pki=$(node_dir "$1")/pki
  cmd_pki >/dev/null
  mkdir -p "$pki"/CA "$pki"/libvirt/private "$pki"/qemu
  cp "$PKI_DIR/cacert.pem" "$pki/CA/cacert.pem"
  cp "$PKI_DIR/cacert.pem" "$pki/qemu/ca-cert.pem"
  (
    cd "$pki/libvirt"
    leaf server "$1" "$2" && mv server-cert.pem servercert.pem && mv server-key.pem private/serverkey.pem
    leaf client "$1" && mv client-cert.pem clientcert.pem && mv client-key.pem private/clientkey.pem
    cd ../qemu
    leaf server "$1" "$2" && leaf client "$1"
  )
}

node_netns() { echo "nclab-$1"; }

# node_net gives NODE a network namespace with IP on the lab bridge.
node_net() {
  local node=$1 ip=$2 ns; ns=$(node_netns "$1")
  ip link show "$LAB_BRIDGE" >/dev/null 2>&1 || { ip link add "$LAB_BRIDGE" type bridge && ip link set "$LAB_BRIDGE" up; }
  # Not `ip | grep -q`: grep leaving early fails the pipe under pipefail.
  [[ $(ip addr show dev "$LAB_BRIDGE") == *"inet $HOST_IP/"* ]] || ip addr add "$HOST_IP/24" dev "$LAB_BRIDGE"
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  local host; host="ncv$(echo -n "$node" | md5sum | cut -c1-10)"
  ip link del "$host" 2>/dev/null || true
  # A fixed MAC per node, as a real node's NIC keeps across a daemon restart:
  # with a new one the other nodes' ARP caches point at the old one, and they
  # cannot reach the restarted node for a minute or more.
  local mac; mac=$(echo -n "$node" | md5sum | sed -E 's/^(..)(..)(..)(..)(..).*/02:\1:\2:\3:\4:\5/')
  ip link add "$host" type veth peer name eth0 address "$mac" netns "$ns"
  ip link set "$host" master "$LAB_BRIDGE" up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  # Replies to clients beyond the lab network (containers on this machine).
  ip -n "$ns" route add default via "$HOST_IP"
}

cmd_start() {
  need_root
  local node=${1:?usage: lab.sh start NODE [IP]}
  local ip=${2:-}
  local dir; dir=$(node_dir "$node")
  local uri; uri=$(cmd_uri "$node")
  if [[ -S $dir/run/libvirt/libvirt-sock ]] && virsh -c "$uri" version >/dev/null 2>&1; then
    echo "$uri"; return 0
  fi
  # A node starts empty: no domains or disks left from an earlier run.
  cmd_stop "$node" 2>/dev/null || true
  rm -rf "$dir"
  mkdir -p "$dir"/{etc,lib,log/qemu,cache,run}
  cp -a /etc/libvirt/. "$dir/etc/"
  rm -f "$dir"/etc/qemu/networks/autostart/*.xml
  cat >"$dir/etc/libvirtd.conf" <<EOF
# NovaCron lab node $node: its own host UUID; TLS with the lab CA's
# certificates, and TCP without auth on the lab bridge, which this machine
# and its containers reach too (test lab only).
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
unix_sock_rw_perms = "0770"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
  local netns="" listen=""
  if [[ -n $ip ]]; then
    node_net "$node" "$ip"
    netns="nsenter --net=/run/netns/$(node_netns "$node") --"
    listen="--listen"
    printf 'listen_tls = 1\nlisten_tcp = 1\nlisten_addr = "%s"\nauth_tcp = "none"\nauth_tls = "none"\n' "$ip" >>"$dir/etc/libvirtd.conf"
    node_pki "$node" "$ip"
  fi
  cat >"$dir/etc/qemu.conf" <<EOF
# Lab only: QEMU as root (kernel and logs anywhere; post-copy needs it), no
# cgroups (two daemons would collide on names), no security driver.
user = "root"
group = "root"
cgroup_controllers = [ ]
security_driver = "none"
EOF
  if [[ -n $ip ]]; then
    # Otherwise the destination advertises its hostname, which resolves here.
    printf 'migration_address = "%s"\nmigration_host = "%s"\n' "$ip" "$ip" >>"$dir/etc/qemu.conf"
    # A peer that stops answering fails a migration in about 3 s, not 30.
    printf 'keepalive_interval = 1\nkeepalive_count = 2\n' >>"$dir/etc/qemu.conf"
  fi
  mkdir -p "$dir/lib/images"
  cp "$GUEST_DIR/vmlinuz" "$GUEST_DIR/initrd.img" "$dir/lib/images/"
  cp "$GUEST_DIR/disk.qcow2" "$dir/lib/images/lab-guest.qcow2"
  # Reuse QEMU's probed capabilities: a first start probes QEMU for 5-9 s.
  if [[ -d $LAB_DIR/capabilities && ! -d $dir/cache/qemu/capabilities ]]; then
    mkdir -p "$dir/cache/qemu" && cp -a "$LAB_DIR/capabilities" "$dir/cache/qemu/capabilities"
  fi
  log "starting libvirtd for $node"
  unshare -m --propagation private -- $netns sh -c "
    mount --bind '$dir/etc' /etc/libvirt &&
    mount --bind '$dir/lib' /var/lib/libvirt &&
    mkdir -p /var/log/libvirt /var/cache/libvirt &&
    mount --bind '$dir/log' /var/log/libvirt &&
    mount --bind '$dir/cache' /var/cache/libvirt &&
    if [ -d '$dir/pki' ]; then mkdir -p /etc/pki && mount --bind '$dir/pki' /etc/pki; fi &&
    mount --bind '$dir/run' /run &&
    mkdir -p /run/libvirt &&
    virtlogd -d -p /run/virtlogd.pid &&
    libvirtd -d $listen -p /run/libvirtd.pid"
  local i
  for i in $(seq 1 150); do
    virsh -c "$uri" version >/dev/null 2>&1 && break
    sleep 0.1
  done
  virsh -c "$uri" version >/dev/null 2>&1 || die "libvirtd for $node did not answer; see $dir/log/libvirtd.log"
  if ! virsh -c "$uri" pool-info default >/dev/null 2>&1; then
    virsh -c "$uri" pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
    virsh -c "$uri" pool-start default >/dev/null
  fi
  virsh -c "$uri" pool-refresh default >/dev/null
  # An isolated network (no forwarding, no DHCP) so VMs' bridge NICs attach;
  # it replaces the host's NAT "default" network copied with /etc/libvirt.
  local br; br=$(node_bridge "$node")
  if ! virsh -c "$uri" net-dumpxml default 2>/dev/null | grep -q "name='$br'"; then
    virsh -c "$uri" net-destroy default >/dev/null 2>&1 || true
    virsh -c "$uri" net-undefine default >/dev/null 2>&1 || true
    echo "<network><name>default</name><bridge name='$br' stp='off'/></network>" >"$dir/net-default.xml"
    virsh -c "$uri" net-define "$dir/net-default.xml" >/dev/null
  fi
  if ! virsh -c "$uri" net-info default | grep -q '^Active: *yes'; then
    ip link del "$br" 2>/dev/null || true
    virsh -c "$uri" net-start default >/dev/null
  fi
  if [[ ! -d $LAB_DIR/capabilities && -d $dir/cache/qemu/capabilities ]]; then
    cp -a "$dir/cache/qemu/capabilities" "$LAB_DIR/capabilities" 2>/dev/null || true
  fi
  echo "$uri"
}

kill_pidfile() {
  local f=$1
  [[ -s $f ]] || return 0
  local pid; pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

cmd_stop() {
  local node=${1:?usage: lab.sh stop NODE}
  local dir; dir=$(node_dir "$node")
  [[ -d $dir ]] || return 0
  # Guests outlive their libvirtd, so stop them by their own pid files first.
  local f
  for f in "$dir"/run/libvirt/qemu/*.pid; do [[ -e $f ]] && kill_pidfile "$f"; done
  kill_pidfile "$dir/run/libvirtd.pid"
  kill_pidfile "$dir/run/virtlogd.pid"
  ip link del "$(node_bridge "$node")" 2>/dev/null || true
  ip netns del "$(node_netns "$node")" 2>/dev/null || true
  rm -rf "$dir/run"
}

cmd_stop_all() {
  local d
  for d in "$LAB_DIR"/nodes/*; do [[ -d $d ]] && cmd_stop "$(basename "$d")"; done
  return 0
}

case ${1:-} in
  install) cmd_install ;;
  guest) cmd_guest ;;
  start) shift; cmd_start "$@" ;;
  uri) shift; cmd_uri "$@" ;;
  pki) cmd_pki ;;
  stop) shift; cmd_stop "$@" ;;
  stop-all) cmd_stop_all ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
