// Kubernetes 1.37 and newer: MachineInfo takes a logger and returns
// cadvisor/lib/model's MachineInfo.
package main

import (
	cadvisortest "k8s.io/kubernetes/pkg/kubelet/cadvisor/testing"

	cadvisorapi "github.com/google/cadvisor/lib/model"
	"k8s.io/klog/v2"
)

// sizedCadvisor reports the machine size chosen on the command line instead
// of the fake's fixed 1 core / 3.75 GiB.
type sizedCadvisor struct {
	*cadvisortest.Fake
	cores  int
	memory uint64
}

func (c *sizedCadvisor) MachineInfo(logger klog.Logger) (*cadvisorapi.MachineInfo, error) {
	info, err := c.Fake.MachineInfo(logger)
	if err != nil {
		return nil, err
	}
	info.NumCores = c.cores
	info.MemoryCapacity = c.memory
	return info, nil
}
