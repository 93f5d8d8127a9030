module pyro/netd

go 1.19
