"""pywg-cni: a CNI plugin that gives a Pod a WireGuard interface."""
