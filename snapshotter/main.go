// layercache-stargz: a small stargz snapshotter daemon for containerd's proxy_plugins, built
// from Debian's packaged stargz-snapshotter Go library (golang-github-containerd-stargz-
// snapshotter-dev). The library's service/ package needs k8s.io/cri-api, which Debian does not
// package, so this wires what it would: fs.NewFilesystem + snapshot.NewSnapshotter, served by
// containerd's snapshotservice on a gRPC unix socket. Layers are found from the snapshot labels
// of ctr-remote rpull and of containerd's CRI plugin (cri.go). Under systemd (Type=notify,
// deploy/systemd/layercache-stargz.service) it reports READY=1 once the socket listens.
//
// Registry hosts: an image's own registry (plain HTTP where it is loopback or -insecure), tried
// after the mirrors given with -mirror REGISTRY=MIRROR (e.g. -mirror
// 127.0.0.1:5001=127.0.0.1:5000 sends the layer reads of 127.0.0.1:5001/app:v1 to the layercache
// at 127.0.0.1:5000 first). Requests to a mirror carry ns=REGISTRY, as containerd's do, so a
// layercache routes them to that registry's upstream.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/snapshots/overlay/overlayutils"
	stargzfs "github.com/containerd/stargz-snapshotter/fs"
	"github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/fs/layer"
	"github.com/containerd/stargz-snapshotter/fs/source"
	snbase "github.com/containerd/stargz-snapshotter/snapshot"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
)

// mirrorFlags collects -mirror REGISTRY=MIRROR (repeatable, tried in the order given).
type mirrorFlags map[string][]string

func (m mirrorFlags) String() string { return fmt.Sprint(map[string][]string(m)) }

func (m mirrorFlags) Set(v string) error {
	reg, mirror, ok := strings.Cut(v, "=")
	if !ok || reg == "" || mirror == "" {
		return fmt.Errorf("want REGISTRY=MIRROR, got %q", v)
	}
	m[reg] = append(m[reg], mirror)
	return nil
}

// nsTransport adds ns=<registry> to the requests it sends to a mirror, as containerd does for
// hosts.toml mirrors: a mirror that serves several registries (layercache) routes by it; the
// library builds blob URLs itself and would send none.
type nsTransport struct {
	inner http.RoundTripper
	host  string // the mirror, host[:port]
	ns    string // the registry it stands in for
}

func (t nsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == t.host && req.URL.Query().Get("ns") == "" {
		req = req.Clone(req.Context())
		q := req.URL.Query()
		q.Set("ns", t.ns)
		req.URL.RawQuery = q.Encode()
	}
	return t.inner.RoundTrip(req)
}

// registryHosts returns, for a reference, the mirrors of its registry and then the registry.
// Each host gets its own http.Client with a non-nil Transport: the library dereferences it.
func registryHosts(mirrors mirrorFlags, insecure map[string]bool, timeout time.Duration) source.RegistryHosts {
	return func(ref reference.Spec) ([]docker.RegistryHost, error) {
		registry := ref.Hostname()
		var hosts []docker.RegistryHost
		for i, h := range append(append([]string{}, mirrors[registry]...), registry) {
			isMirror := i < len(mirrors[registry])
			scheme := "https"
			if s, rest, ok := strings.Cut(h, "://"); ok {
				scheme, h = s, rest
			} else if local, _ := docker.MatchLocalhost(h); local || insecure[h] {
				scheme = "http"
			}
			if h == "docker.io" {
				h = "registry-1.docker.io"
			}
			var transport http.RoundTripper = http.DefaultTransport.(*http.Transport).Clone()
			if isMirror {
				transport = nsTransport{inner: transport, host: h, ns: registry}
			}
			client := &http.Client{Transport: transport, Timeout: timeout}
			hosts = append(hosts, docker.RegistryHost{
				Client:       client,
				Host:         h,
				Scheme:       scheme,
				Path:         "/v2",
				Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
				Authorizer:   docker.NewDockerAuthorizer(docker.WithAuthClient(client)),
			})
		}
		return hosts, nil
	}
}

func main() {
	root := flag.String("root", "/var/lib/layercache-stargz", "state directory (snapshots, FUSE mounts, caches)")
	address := flag.String("address", "/run/layercache-stargz/stargz.sock", "gRPC unix socket containerd's proxy plugin dials")
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn, error")
	noBackgroundFetch := flag.Bool("no-background-fetch", false, "do not fetch whole layers in the background")
	noPrefetch := flag.Bool("no-prefetch", false, "do not fetch the eStargz prefetch (landmark) region at mount")
	timeout := flag.Duration("request-timeout", 30*time.Second, "timeout of each registry request")
	mirrors := mirrorFlags{}
	flag.Var(mirrors, "mirror", "REGISTRY=MIRROR: read REGISTRY's layers from MIRROR first (repeatable; \"http://\" prefix or a loopback MIRROR means plain HTTP)")
	var insecureList string
	flag.StringVar(&insecureList, "insecure", "", "comma-separated registry hosts spoken to over plain HTTP")
	flag.Parse()

	level, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "layercache-stargz:", err)
		os.Exit(2)
	}
	logrus.SetLevel(level)
	logrus.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	ctx := log.WithLogger(context.Background(), log.L)
	insecure := map[string]bool{}
	for _, h := range strings.Split(insecureList, ",") {
		if h != "" {
			insecure[h] = true
		}
	}
	if err := run(ctx, *root, *address, *noBackgroundFetch, *noPrefetch, registryHosts(mirrors, insecure, *timeout)); err != nil {
		log.G(ctx).WithError(err).Error("layercache-stargz failed")
		os.Exit(1)
	}
}

// sdNotify tells systemd the daemon's state (a Type=notify unit: "started" means the socket
// listens); nothing without $NOTIFY_SOCKET. Go's net package maps a leading '@' (an abstract
// socket) itself.
func sdNotify(ctx context.Context, state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err == nil {
		_, err = conn.Write([]byte(state))
		conn.Close()
	}
	if err != nil {
		log.G(ctx).WithError(err).Warn("notifying systemd")
	}
}

func run(ctx context.Context, root, address string, noBackgroundFetch, noPrefetch bool, hosts source.RegistryHosts) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	snRoot := filepath.Join(root, "snapshotter")
	if err := os.MkdirAll(snRoot, 0o700); err != nil {
		return err
	}
	cfg := config.Config{NoBackgroundFetch: noBackgroundFetch, NoPrefetch: noPrefetch, NoPrometheus: true}
	opq := layer.OverlayOpaqueTrusted
	if userxattr, err := overlayutils.NeedsUserXAttr(snRoot); err == nil && userxattr {
		opq = layer.OverlayOpaqueUser
	}
	fs, err := stargzfs.NewFilesystem(filepath.Join(root, "stargz"), cfg,
		stargzfs.WithGetSources(firstSource(sourceFromCRILabels(hosts), source.FromDefaultLabels(hosts))),
		stargzfs.WithOverlayOpaqueType(opq))
	if err != nil {
		return fmt.Errorf("filesystem: %w", err)
	}
	sn, err := snbase.NewSnapshotter(ctx, snRoot, fs, snbase.AsynchronousRemove)
	if err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	defer func() {
		if err := sn.Close(); err != nil {
			log.G(ctx).WithError(err).Warn("closing the snapshotter")
		}
	}()

	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return err
	}
	if err := os.Remove(address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return err
	}
	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))
	served := make(chan error, 1)
	go func() { served <- rpc.Serve(l) }()
	log.G(ctx).WithField("address", address).WithField("root", root).Info("layercache-stargz serving")
	sdNotify(ctx, "READY=1")

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-signals:
		log.G(ctx).WithField("signal", s).Info("stopping")
		sdNotify(ctx, "STOPPING=1")
		rpc.Stop()
		return nil
	case err := <-served:
		return err
	}
}
