module pyro/guest

go 1.19
