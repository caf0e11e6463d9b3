"""The ground of Rutas: settings, the PostGIS store, readers, validation and reference layers."""
