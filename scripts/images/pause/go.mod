module flotilla.local/pause

go 1.21
