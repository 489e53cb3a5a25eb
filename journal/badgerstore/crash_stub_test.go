package badgerstore

func crashChild() bool { return false }
