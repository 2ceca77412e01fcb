// Kubernetes 1.36 and older: cadvisor.Interface.MachineInfo takes no logger.
package main

import (
	cadvisortest "k8s.io/kubernetes/pkg/kubelet/cadvisor/testing"

	cadvisorapi "github.com/google/cadvisor/info/v1"
)

// sizedCadvisor reports the machine size chosen on the command line instead
// of the fake's fixed 1 core / 3.75 GiB.
type sizedCadvisor struct {
	*cadvisortest.Fake
	cores  int
	memory uint64
}

func (c *sizedCadvisor) MachineInfo() (*cadvisorapi.MachineInfo, error) {
	info, err := c.Fake.MachineInfo()
	if err != nil {
		return nil, err
	}
	info.NumCores = c.cores
	info.MemoryCapacity = c.memory
	return info, nil
}
