package vm_test

import (
	"context"
	"fmt"

	"github.com/coffer-dev/coffer/vm"
)

// ExampleStart shows the agent mode's shape; the guest reaches only the
// host's loopback, so a broker elsewhere is refused before anything
// boots. With a real machine (see TestMachine):
//
//	m, _ := vm.Start(ctx, vm.WithKernelDir(k), vm.WithState(st), vm.WithKBS(kbs), vm.WithForward(registry))
//	conn, _ := m.Dial(ctx)
//	c := ttrpc.NewClient(conn)
//	cdh.NewImagePullServiceClient(c).PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: img, BundlePath: "/run/kata-containers/c1"})
//	ag := kata.NewAgentServiceClient(c) // CreateContainer, StartContainer, ReadStdout, WaitProcess
//	m.Stop(ctx)
func ExampleStart() {
	_, err := vm.Start(context.Background(), vm.WithKernelDir("/k"), vm.WithState("/s"), vm.WithKBS("http://10.0.0.1:8080"))
	fmt.Println(err)
	// Output: broker "10.0.0.1:8080": the guest reaches only the host's loopback, so write it as 127.0.0.1:PORT: unsupported
}
