"""Operations around the Serve application: the `make run` launcher and k8s config rendering."""
